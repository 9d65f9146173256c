"""Batch transforms: ToFloat, Normalize, Pad, Resize (= torch bilinear, align_corners=False), RandomShiftCrop."""

import itertools

import numpy as np
import pytest

import minialex as ma
from minialex.data import Compose, Normalize, Pad, RandomShiftCrop, Resize, ToFloat


def digits(n=4, channels=1, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


# --------------------------------------------------------------------------- ToFloat


def test_tofloat_maps_0_255_onto_0_1_in_float32():
    images = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    out = ToFloat()(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, images / 255.0, rtol=0, atol=1e-7)
    assert np.all(np.diff(out.ravel()) > 0)  # order kept, no two levels merged


def test_tofloat_honours_its_dtype():
    out = ToFloat(np.float64)(digits())
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, digits() / 255.0, rtol=1e-15)


# --------------------------------------------------------------------------- Normalize


def test_normalize_subtracts_the_mean_and_divides_by_the_std_per_channel():
    x = np.random.default_rng(1).random((5, 3, 4, 6), dtype=np.float32)
    mean, std = (0.1, 0.5, 0.9), (0.5, 1.0, 2.0)
    out = Normalize(mean, std)(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    expected = (x - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_normalize_with_scalars_on_one_channel():
    x = ToFloat()(digits())
    mean, std = Normalize.MNIST
    np.testing.assert_allclose(Normalize(mean, std)(x), (x - mean) / std, rtol=1e-5, atol=1e-5)


def test_normalize_scalars_broadcast_over_every_channel():
    x = np.random.default_rng(2).random((2, 3, 5, 5))
    np.testing.assert_allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25, rtol=1e-12)


def test_normalize_mnist_mean_is_the_training_mean_pixel_on_the_0_1_scale():
    mean, std = Normalize.MNIST
    assert 0 < mean < 1 and 0 < std < 1
    assert mean == pytest.approx(33.318 / 255, abs=1e-3)


@pytest.mark.parametrize("std", [0.0, -1.0, (1.0, 0.0, 1.0)])
def test_normalize_rejects_a_non_positive_std(std):
    with pytest.raises(ValueError):
        Normalize(0.5, std)


def test_normalize_rejects_a_channel_count_mismatch_and_non_4d_input():
    with pytest.raises(ValueError):
        Normalize((0.1, 0.2), (1.0, 1.0))(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError):
        Normalize(0.1, 1.0)(np.zeros((3, 4, 4), np.float32))


# --------------------------------------------------------------------------- Pad


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_pad_adds_a_zero_border_on_every_side(padding):
    x = digits(3, channels=2) | 1  # no zero pixels inside
    out = Pad(padding)(x)
    p = padding
    assert out.shape == (3, 2, 28 + 2 * p, 28 + 2 * p) and out.dtype == x.dtype
    np.testing.assert_array_equal(out[:, :, p:p + 28, p:p + 28], x)
    assert out.sum(dtype=np.int64) == x.sum(dtype=np.int64)  # everything else is zero


@pytest.mark.parametrize("padding", [-1, 1.5, "2", None])
def test_pad_rejects_bad_padding(padding):
    with pytest.raises(ValueError):
        Pad(padding)


# --------------------------------------------------------------------------- Resize


def resize_by_hand(x, size):
    """Bilinear with pixel centres aligned, written as the textbook loop over output pixels (float64)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, size, size))

    def source(i, in_size):
        position = min(max((i + 0.5) * in_size / size - 0.5, 0.0), in_size - 1)
        low = int(np.floor(position))
        return low, min(low + 1, in_size - 1), position - low

    for i in range(size):
        y0, y1, fy = source(i, h)
        for j in range(size):
            x0, x1, fx = source(j, w)
            out[:, :, i, j] = ((1 - fy) * ((1 - fx) * x[:, :, y0, x0] + fx * x[:, :, y0, x1])
                               + fy * ((1 - fx) * x[:, :, y1, x0] + fx * x[:, :, y1, x1]))
    return out


def test_resize_to_227_gives_the_alexnet_input_shape_in_float32():
    out = Resize(227)(digits(2))
    assert out.shape == (2, 1, 227, 227) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("in_shape, size", [((2, 1, 28, 28), 227), ((1, 3, 13, 9), 20), ((2, 2, 50, 37), 13), ((1, 1, 5, 5), 5)])
def test_resize_equals_bilinear_with_pixel_centres_by_hand(in_shape, size):
    x = np.random.default_rng(3).random(in_shape)
    np.testing.assert_allclose(Resize(size)(x), resize_by_hand(x, size), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_size, size", [(28, 227), (28, 56), (28, 13), (227, 28), (30, 7), (1, 4), (28, 28)])
def test_resize_matches_torch_interpolate_bilinear_align_corners_false(in_size, size):
    torch = pytest.importorskip("torch")

    def theirs(x):
        return torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                                               align_corners=False).numpy()

    x = ToFloat(np.float64)(digits(3, channels=2, size=in_size, seed=in_size))
    # In float64 both compute the same formula: equal to rounding.
    np.testing.assert_allclose(Resize(size)(x), theirs(x), rtol=0, atol=1e-10)
    # In float32 torch also computes the sampling positions in float32 (errors up to ~2e-5 at 227 -> 28),
    # so compare within ~1e-5 of torch and, tighter, with torch's float64 answer.
    x32 = x.astype(np.float32)
    ours = Resize(size)(x32)
    assert ours.dtype == np.float32 and ours.shape == (3, 2, size, size)
    np.testing.assert_allclose(ours, theirs(x32), rtol=0, atol=5e-5)
    np.testing.assert_allclose(ours, theirs(x), rtol=0, atol=1e-6)


def test_resize_to_the_same_size_is_the_identity():
    x = ToFloat()(digits())
    np.testing.assert_allclose(Resize(28)(x), x, rtol=0, atol=1e-7)


def test_resize_keeps_a_constant_image_constant():
    x = np.full((1, 1, 28, 28), 0.375, np.float32)
    np.testing.assert_allclose(Resize(227)(x), 0.375, rtol=0, atol=1e-7)


@pytest.mark.parametrize("size", [0, -3, 2.0, "227", None])
def test_resize_rejects_bad_sizes(size):
    with pytest.raises(ValueError):
        Resize(size)


# --------------------------------------------------------------------------- RandomShiftCrop


def shifted(image, dy, dx):
    """``image`` (C, H, W) moved down by dy and right by dx pixels, zero fill."""
    out = np.zeros_like(image)
    _, h, w = image.shape
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def shifts_that_reproduce(image, out, s):
    return [(dy, dx) for dy, dx in itertools.product(range(-s, s + 1), repeat=2)
            if np.array_equal(shifted(image, dy, dx), out)]


@pytest.mark.parametrize("max_shift", [1, 2, 4])
def test_random_shift_crop_outputs_are_shifted_copies_of_the_inputs(max_shift):
    ma.manual_seed(0)
    x = (digits(64, channels=2, seed=max_shift) | 1)  # every pixel non-zero: the shift is unambiguous
    out = RandomShiftCrop(max_shift)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for image, result in zip(x, out):
        found = shifts_that_reproduce(image, result, max_shift)
        assert len(found) == 1, "each output must be one shift (the same for all channels) of its input"
        seen.add(found[0])
    assert len(seen) > 1  # images are shifted independently


def test_random_shift_crop_draws_every_shift_in_the_square():
    ma.manual_seed(1)
    s = 2
    x = digits(400, seed=11) | 1
    out = RandomShiftCrop(s)(x)
    seen = {shifts_that_reproduce(image, result, s)[0] for image, result in zip(x, out)}
    assert seen == set(itertools.product(range(-s, s + 1), repeat=2))


def test_random_shift_crop_works_on_float_images():
    ma.manual_seed(2)
    x = ToFloat()(digits(8) | 1)
    out = RandomShiftCrop(3)(x)
    assert out.dtype == np.float32
    for image, result in zip(x, out):
        assert len(shifts_that_reproduce(image, result, 3)) == 1


def test_random_shift_crop_repeats_under_manual_seed():
    x = digits(32)
    crop = RandomShiftCrop(3)
    ma.manual_seed(123)
    first = crop(x)
    again_later = crop(x)
    ma.manual_seed(123)
    np.testing.assert_array_equal(crop(x), first)
    np.testing.assert_array_equal(crop(x), again_later)
    assert not np.array_equal(first, again_later)


def test_random_shift_crop_of_zero_is_the_identity():
    x = digits(4)
    np.testing.assert_array_equal(RandomShiftCrop(0)(x), x)


@pytest.mark.parametrize("max_shift", [-1, 1.5, "2", None])
def test_random_shift_crop_rejects_bad_shifts(max_shift):
    with pytest.raises(ValueError):
        RandomShiftCrop(max_shift)


@pytest.mark.parametrize("make", [Pad, Resize, RandomShiftCrop], ids=["Pad", "Resize", "RandomShiftCrop"])
def test_a_bool_is_not_accepted_as_a_pixel_count(make):
    # The project's convention (DataLoader, StepLR, manual_seed): True is not the integer 1.
    with pytest.raises(ValueError):
        make(True)


# --------------------------------------------------------------------------- Compose


def test_compose_applies_transforms_in_order():
    x = digits(3)
    mean, std = Normalize.MNIST
    out = Compose([ToFloat(), Normalize(mean, std), Pad(2)])(x)
    expected = np.pad((x / 255.0 - mean) / std, ((0, 0), (0, 0), (2, 2), (2, 2)))
    assert out.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert "ToFloat" in repr(Compose([ToFloat(), Pad(2)]))
