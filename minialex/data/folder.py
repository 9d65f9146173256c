"""ImageFolder: a labelled image dataset from a tree of folders, one folder a class.

    root/cat/001.png
    root/cat/002.jpg
    root/dog/a/xyz.jpeg      (sub-folders of a class folder belong to it)

Classes are the sorted names of the folders in ``root``; class i is
``classes[i]``. Within a class the images are listed as torchvision lists
them: ``os.walk`` (following links), the walk's folders sorted by path and
the files sorted by name. Entries whose name starts with a dot are skipped
(``.ipynb_checkpoints``, macOS's ``._photo.jpg``): torchvision would make a
hidden folder a class; here it is ignored. The extensions are torchvision's
(.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) and .gif, in any case.

Images are decoded with Pillow (the ``vision`` extra), imported only when the
first image is read. Files are only ever decoded as images: no pickle.

Channels. By default (``channels=None``) a greyscale image (Pillow modes
'1', 'L', 'LA', 'I', 'I;16', 'F', or a palette of greys only, as in a grey
GIF) becomes one channel and every other image (RGB, RGBA, a colour
palette, CMYK, ...) three, so an MNIST-style folder of grey PNGs
gives (N, 1, H, W) batches. A batch cannot hold both: a batch that meets a
grey and a colour image raises ValueError naming the two files; pass
``channels=3`` to convert every image to RGB (what torchvision always does;
use it for photo collections such as ImageNet, which hold a few grey and
CMYK JPEGs) or ``channels=1`` to convert every image to greyscale.

Sizes. Transforms act on whole batches (N, C, H, W), after the images are
stacked, so images of different sizes cannot meet in one batch: that raises
ValueError naming the two files and their shapes. Pass ``size=(H, W)`` (or
one int for a square) to resize every image to that size with Pillow's
bilinear filter as it is decoded (the aspect ratio is not kept).
"""

import numbers
import os

import numpy as np

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# Pillow modes that hold one grey value per pixel (with or without alpha).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


class ImageDecodeError(ValueError):
    """A file in the folder is not an image Pillow can decode (corrupt, truncated, not an image)."""


def _pillow():
    """PIL.Image, imported on first use with a message that says how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageFolder decodes images with Pillow, which is not installed: "
                          "pip install 'minialex[vision]' (or pip install pillow)") from None
    return Image


def is_image_file(filename):
    """True for a name with one of IMG_EXTENSIONS (any case) that is not hidden."""
    return not filename.startswith(".") and filename.lower().endswith(IMG_EXTENSIONS)


def find_classes(root):
    """(sorted class folder names, {name: index}); hidden folders are not classes."""
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise FileNotFoundError(f"ImageFolder: {root} holds no class folders; expected root/<class name>/<image files>")
    return names, {name: index for index, name in enumerate(names)}


def make_dataset(root, class_to_idx):
    """[(path, class index)] in torchvision's order; a class with no image file raises FileNotFoundError."""
    samples, empty = [], []
    for name in sorted(class_to_idx, key=class_to_idx.get):
        folder = os.path.join(root, name)
        walk = []
        for directory, subfolders, filenames in os.walk(folder, followlinks=True):
            subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
            walk.append((directory, filenames))
        found = [(os.path.join(directory, filename), class_to_idx[name])
                 for directory, filenames in sorted(walk) for filename in sorted(filenames)
                 if is_image_file(filename)]
        if not found:
            empty.append(name)
        samples += found
    if empty:
        raise FileNotFoundError(f"ImageFolder: no image file in the class folder(s) {', '.join(map(repr, empty))} "
                                f"of {root}; the extensions read are {', '.join(IMG_EXTENSIONS)} (any case)")
    return samples


def _check_size(size):
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"ImageFolder: size must be a positive int or a pair (H, W) of them, got {size!r}")
    return int(size[0]), int(size[1])


def _grey_palette(image):
    """True when every colour of a palette image's palette is a grey (R = G = B): a grey GIF."""
    palette = image.getpalette("RGB")
    if not palette or "transparency" in image.info:
        return False
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool(np.all(rgb == rgb[:, :1]))


def decode_image(path, channels=None, size=None):
    """The image at ``path`` as a uint8 array (C, H, W); see the module docstring for channels and size."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            image.load()
            grey = image.mode in GREY_MODES or (image.mode == "P" and _grey_palette(image))
            if channels == 1 or (channels is None and grey):
                # 16-bit and float grey: Pillow's 'L' conversion clips to 0..255, as its 'RGB' one (torchvision's) does.
                image = image.convert("L") if image.mode != "L" else image
            else:
                image = image.convert("RGB") if image.mode != "RGB" else image
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # Pillow reports bad files as OSError, ValueError, SyntaxError, ...
        raise ImageDecodeError(f"{path}: Pillow cannot decode this image ({type(error).__name__}: {error})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_images(paths, channels=None, size=None):
    """Decode ``paths`` and stack them into (N, C, H, W) uint8; a shape that differs raises ValueError."""
    if len(paths) == 0:
        shape = (0, channels or 1) + (size or (0, 0))
        return np.zeros(shape, np.uint8)
    images = [decode_image(path, channels, size) for path in paths]
    for path, image in zip(paths[1:], images[1:]):
        if image.shape != images[0].shape:
            first = images[0].shape
            if image.shape[0] != first[0]:
                hint = ("a batch holds grey (1 channel) and colour (3 channel) images: pass ImageFolder(..., "
                        "channels=3) to convert them all to RGB (or channels=1 for greyscale)")
            else:
                hint = ("a batch needs images of one size, and transforms act on whole batches: pass "
                        "ImageFolder(..., size=(H, W)) to resize each image as it is decoded")
            raise ValueError(f"ImageFolder: {paths[0]} decodes to shape {first} (C, H, W) but {path} to "
                             f"{image.shape}; {hint}")
    return np.stack(images)


class ImageFolder:
    """Images in ``root/<class name>/...``, labelled by the index of their class folder.

    ``classes`` (sorted folder names), ``class_to_idx``, ``samples`` (a list
    of (path, class index)) and ``targets`` (the class indices) are as in
    torchvision. ``dataset[i]`` is (image uint8 (C, H, W), class index);
    ``get_batch(indices)`` is (images (N, C, H, W), labels int64 (N,)), with
    ``transform`` applied to the whole batch as for MNIST. ``load_batch``
    is the same without the transform: the DataLoader's worker processes call
    it and apply ``transform`` in the main process, so random transforms
    draw from the main process's seeded RNG.

    ``channels`` (None, 1 or 3) and ``size`` (None, int or (H, W)) decide
    how images of different kinds and sizes are made to fit one batch: see
    the module docstring. Errors: FileNotFoundError for a missing root, a
    root without class folders or a class folder without images (named);
    NotADirectoryError for a root that is a file; ImageDecodeError (a
    ValueError) naming a file Pillow cannot decode, with Pillow's reason.
    """

    def __init__(self, root, transform=None, *, channels=None, size=None):
        if channels not in (None, 1, 3) or isinstance(channels, bool):
            raise ValueError(f"ImageFolder: channels must be None (grey stays grey), 1 or 3, got {channels!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"ImageFolder: transform must be callable or None, got {type(transform).__name__}")
        self.root = os.path.expanduser(os.fspath(root))
        if not os.path.exists(self.root):
            raise FileNotFoundError(f"ImageFolder: the root folder {self.root} does not exist")
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"ImageFolder: the root {self.root} is a file, not a folder of class folders")
        self.transform = transform
        self.channels = channels
        self.size = _check_size(size)
        self.classes, self.class_to_idx = find_classes(self.root)
        self.samples = make_dataset(self.root, self.class_to_idx)
        self.targets = [label for _, label in self.samples]

    def __len__(self):
        return len(self.samples)

    def load_batch(self, indices):
        """(images uint8 (N, C, H, W), labels int64 (N,)) decoded from the files, without the transform."""
        picked = [self.samples[int(i)] for i in np.asarray(indices).reshape(-1)]
        images = load_images([path for path, _ in picked], self.channels, self.size)
        return images, np.array([label for _, label in picked], dtype=np.int64)

    def get_batch(self, indices):
        """(transformed images, labels) for an array of indices."""
        images, labels = self.load_batch(indices)
        return (self.transform(images) if self.transform else images), labels

    def __getitem__(self, index):
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"ImageFolder indices are ints, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        images, labels = self.get_batch(np.array([index]))
        return images[0], int(labels[0])

    def __repr__(self):
        return (f"{type(self).__name__}(root={self.root!r}, {len(self)} images, {len(self.classes)} classes"
                + (f", channels={self.channels}" if self.channels else "")
                + (f", size={self.size}" if self.size else "") + ")")
