"""ImageFolder: class order, sample order, exact PNG pixels, channel and size rules, every error it names."""

import os
import sys

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="ImageFolder decodes with Pillow (the vision extra)")
from PIL import Image  # noqa: E402

import minialex as ma  # noqa: E402
from minialex.data import DataLoader, ImageDecodeError, ImageFolder, Subset  # noqa: E402
from minialex.data.folder import IMG_EXTENSIONS  # noqa: E402


def pixels(shape, seed):
    """Random uint8 pixels: (H, W) for grey, (H, W, 3) for RGB."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return str(path)


def chw(array):
    """What ImageFolder returns for an (H, W) or (H, W, 3) array."""
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def rgb_tree(root, counts, size=(4, 5)):
    """root/<class>/<i>.png of random RGB pixels; returns {path: pixels}."""
    written = {}
    for k, (name, count) in enumerate(counts.items()):
        for i in range(count):
            array = pixels(size + (3,), seed=100 * k + i)
            written[save(os.path.join(root, name, f"{i}.png"), array)] = array
    return written


# --------------------------------------------------------------------------- listing


def test_classes_are_the_sorted_folder_names_and_samples_are_sorted_within_a_class(tmp_path):
    for name in ["dog", "Cat", "ant", "10", "9"]:
        for filename in ["b.png", "a.PNG", "c.JpEg"]:
            save(tmp_path / name / filename, pixels((2, 2, 3), 0))
    ds = ImageFolder(tmp_path)
    assert ds.classes == sorted(["dog", "Cat", "ant", "10", "9"]) == ["10", "9", "Cat", "ant", "dog"]
    assert ds.class_to_idx == {name: i for i, name in enumerate(ds.classes)}
    expected = [(os.path.join(str(tmp_path), name, f), i) for i, name in enumerate(ds.classes)
                for f in ["a.PNG", "b.png", "c.JpEg"]]
    assert ds.samples == expected
    assert ds.targets == [label for _, label in expected] and len(ds) == 15


def test_hidden_entries_other_files_and_loose_files_are_skipped_and_subfolders_belong_to_their_class(tmp_path):
    save(tmp_path / "a" / "x.png", pixels((2, 2), 0))
    save(tmp_path / "a" / "sub" / "y.png", pixels((2, 2), 1))
    save(tmp_path / "a" / "._x.png", pixels((2, 2), 2))          # macOS metadata, not an image
    save(tmp_path / "a" / ".cache" / "z.png", pixels((2, 2), 3))  # hidden folder inside a class
    save(tmp_path / ".ipynb_checkpoints" / "w.png", pixels((2, 2), 4))  # hidden folder is no class
    save(tmp_path / "loose.png", pixels((2, 2), 5))               # a file in root is no class
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "x.png.bak").write_bytes(b"")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["a"]
    assert [path for path, _ in ds.samples] == [str(tmp_path / "a" / "x.png"), str(tmp_path / "a" / "sub" / "y.png")]


@pytest.mark.parametrize("extension", IMG_EXTENSIONS)
def test_every_listed_extension_is_read_in_any_case(tmp_path, extension):
    array = pixels((3, 4), 0)  # grey
    path = save(tmp_path / "c" / ("img" + extension.upper()), array)
    ds = ImageFolder(tmp_path)
    assert ds.samples == [(path, 0)]
    image, label = ds[0]
    channels = 3 if extension == ".webp" else 1  # WebP has no grey mode: Pillow writes and reads RGB
    assert image.shape == (channels, 3, 4) and image.dtype == np.uint8 and label == 0
    if extension not in (".jpg", ".jpeg", ".webp"):  # lossless formats give the pixels back
        np.testing.assert_array_equal(image[0], array)


def test_classes_and_samples_equal_torchvisions(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    for name in ["b", "a", "B", "a-x"]:
        for filename in ["2.png", "10.jpg", "1.JPEG"]:
            save(tmp_path / name / filename, pixels((2, 2, 3), 0))
        (tmp_path / name / "n.txt").write_text("not an image")  # skipped by both
        save(tmp_path / name / "sub" / "s.png", pixels((2, 2, 3), 1))
    ours, theirs = ImageFolder(tmp_path), datasets.ImageFolder(str(tmp_path))
    assert ours.classes == theirs.classes
    assert ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples and ours.targets == theirs.targets


# --------------------------------------------------------------------------- pixels


def test_png_pixels_come_back_exactly_grey_as_one_channel_rgb_as_three(tmp_path):
    grey = {save(tmp_path / "grey" / f"{i}.png", pixels((5, 3), i)): pixels((5, 3), i) for i in range(3)}
    ds = ImageFolder(tmp_path)
    for i, (path, label) in enumerate(ds.samples):
        image, got_label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (1, 5, 3) and got_label == label == 0
        np.testing.assert_array_equal(image, chw(grey[path]))
    written = rgb_tree(tmp_path / "rgb", {"x": 2, "y": 3})
    ds = ImageFolder(tmp_path / "rgb")
    images, labels = ds.get_batch(np.array([4, 0, 2]))
    assert images.shape == (3, 3, 4, 5) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0, 1]
    for image, index in zip(images, [4, 0, 2]):
        np.testing.assert_array_equal(image, chw(written[ds.samples[index][0]]))
    np.testing.assert_array_equal(ds[-1][0], images[0])


def test_jpeg_pixels_are_pillows_decoding(tmp_path):
    paths = [save(tmp_path / "c" / "rgb.jpg", pixels((8, 8, 3), 0)), save(tmp_path / "d" / "grey.jpg", pixels((8, 8), 1))]
    ds = ImageFolder(tmp_path)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            expected = chw(np.asarray(image))
        assert ds[i][0].shape == expected.shape == ((3, 8, 8), (1, 8, 8))[i]
        np.testing.assert_array_equal(ds[i][0], expected)


@pytest.mark.parametrize("mode, channels", [("RGBA", 3), ("P", 3), ("CMYK", 3), ("LA", 1), ("I;16", 1), ("1", 1)])
def test_pillow_modes_become_grey_or_rgb_as_torchvisions_rgb_conversion_does(tmp_path, mode, channels):
    source = pixels((4, 4), 0) if mode in ("LA", "I;16", "1") else pixels((4, 4, 3), 0)
    image = Image.fromarray(source).convert(mode)
    path = tmp_path / "c" / ("x.tif" if mode == "CMYK" else "x.png")
    os.makedirs(path.parent)
    image.save(path)
    got = ImageFolder(tmp_path)[0][0]
    with Image.open(path) as reread:
        rgb = np.asarray(reread.convert("RGB")).transpose(2, 0, 1)  # torchvision's pil_loader
    assert got.shape == (channels, 4, 4)
    np.testing.assert_array_equal(got, rgb[:channels])


def test_the_transform_gets_the_whole_batch_as_for_mnist(tmp_path):
    rgb_tree(tmp_path, {"a": 3, "b": 2})
    seen = []

    def transform(images):
        seen.append((images.shape, images.dtype))
        return images.astype(np.float32) / 255

    ds = ImageFolder(tmp_path, transform=transform)
    images, labels = ds.get_batch(np.arange(5))
    assert seen == [((5, 3, 4, 5), np.uint8)] and images.dtype == np.float32
    raw, raw_labels = ds.load_batch(np.arange(5))
    np.testing.assert_allclose(images, raw / np.float32(255))
    np.testing.assert_array_equal(labels, raw_labels)
    image, label = ds[3]
    assert image.shape == (3, 4, 5) and image.dtype == np.float32 and label == 1


def test_a_dataloader_over_an_imagefolder_yields_its_batches_in_the_seeded_order(tmp_path):
    rgb_tree(tmp_path, {"a": 4, "b": 3})
    ds = ImageFolder(tmp_path)
    ma.manual_seed(7)
    batches = list(DataLoader(Subset(ds, [0, 2, 4, 6]), batch_size=3, shuffle=True))
    ma.manual_seed(7)
    order = [0, 2, 4, 6]
    order = [order[i] for i in ma.backend.cpu_rng().permutation(4)]
    images = np.concatenate([images for images, _ in batches])
    np.testing.assert_array_equal(images, ds.load_batch(np.array(order))[0])
    assert [len(labels) for _, labels in batches] == [3, 1]


# --------------------------------------------------------------------------- one batch, one shape


def test_a_batch_mixing_grey_and_colour_names_both_files_and_channels_3_converts(tmp_path):
    grey = save(tmp_path / "a" / "grey.png", pixels((4, 4), 0))
    colour = save(tmp_path / "b" / "colour.png", pixels((4, 4, 3), 1))
    ds = ImageFolder(tmp_path)
    assert ds[0][0].shape == (1, 4, 4) and ds[1][0].shape == (3, 4, 4)  # one at a time is fine
    with pytest.raises(ValueError, match="channels=3") as error:
        ds.get_batch(np.array([0, 1]))
    assert grey in str(error.value) and colour in str(error.value) and "(1, 4, 4)" in str(error.value)
    images, _ = ImageFolder(tmp_path, channels=3).get_batch(np.array([0, 1]))
    assert images.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(images[0], np.repeat(pixels((4, 4), 0)[None], 3, axis=0))
    images, _ = ImageFolder(tmp_path, channels=1).get_batch(np.array([0, 1]))
    assert images.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(images[1, 0], np.asarray(Image.open(colour).convert("L")))


def test_a_batch_mixing_sizes_names_both_files_and_size_resizes(tmp_path):
    small = save(tmp_path / "a" / "small.png", pixels((4, 6, 3), 0))
    large = save(tmp_path / "a" / "large.png", pixels((8, 8, 3), 1))
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"size=\(H, W\)") as error:
        ds.get_batch(np.array([0, 1]))
    message = str(error.value)
    assert small in message and large in message and "(3, 8, 8)" in message and "(3, 4, 6)" in message
    images, _ = ImageFolder(tmp_path, size=(5, 7)).get_batch(np.array([0, 1]))
    assert images.shape == (2, 3, 5, 7)
    expected = np.asarray(Image.open(large).resize((7, 5), Image.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(images[0], expected)
    assert ImageFolder(tmp_path, size=3).get_batch(np.array([0, 1]))[0].shape == (2, 3, 3, 3)


# --------------------------------------------------------------------------- errors


def test_a_missing_root_raises_filenotfounderror_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        ImageFolder(tmp_path / "nowhere")
    assert "nowhere" in str(error.value)


def test_a_root_that_is_a_file_raises_notadirectoryerror(tmp_path):
    path = save(tmp_path / "x" / "a.png", pixels((2, 2), 0))
    with pytest.raises(NotADirectoryError, match="a.png"):
        ImageFolder(path)


def test_a_root_without_class_folders_raises(tmp_path):
    save(tmp_path / "loose.png", pixels((2, 2), 0))
    os.makedirs(tmp_path / ".hidden")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path)


def test_class_folders_without_images_are_named(tmp_path):
    save(tmp_path / "full" / "a.png", pixels((2, 2), 0))
    os.makedirs(tmp_path / "empty")
    os.makedirs(tmp_path / "texts")
    (tmp_path / "texts" / "readme.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="'empty', 'texts'") as error:
        ImageFolder(tmp_path)
    assert "full" not in str(error.value).split("of")[0]


@pytest.mark.parametrize("content", [b"", b"this is not a png", "truncated"])
def test_a_corrupt_image_names_the_file_and_pillows_reason(tmp_path, content):
    save(tmp_path / "a" / "good.png", pixels((4, 4), 0))
    bad = tmp_path / "a" / "bad.png"
    if content == "truncated":
        save(bad, pixels((16, 16), 1))
        bad.write_bytes(bad.read_bytes()[:60])
    else:
        bad.write_bytes(content)
    ds = ImageFolder(tmp_path)  # listing does not read the files
    with pytest.raises(ImageDecodeError, match="Pillow cannot decode") as error:
        ds.get_batch(np.array([1, 0]))
    assert str(bad) in str(error.value) and "Error" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_without_pillow_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    save(tmp_path / "a" / "x.png", pixels((2, 2), 0))
    ds = ImageFolder(tmp_path)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(ImportError, match=r"minialex\[vision\]"):
        ds[0]


@pytest.mark.parametrize("kwargs", [{"channels": 2}, {"channels": True}, {"size": 0}, {"size": (3,)},
                                    {"size": (2.5, 3)}, {"size": "8"}])
def test_bad_channels_or_size_raise_valueerror(tmp_path, kwargs):
    save(tmp_path / "a" / "x.png", pixels((2, 2), 0))
    with pytest.raises(ValueError):
        ImageFolder(tmp_path, **kwargs)


def test_a_transform_that_is_not_callable_and_bad_indices_raise(tmp_path):
    save(tmp_path / "a" / "x.png", pixels((2, 2), 0))
    with pytest.raises(TypeError):
        ImageFolder(tmp_path, transform="ToFloat")
    ds = ImageFolder(tmp_path)
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(TypeError):
        ds[0.0]
