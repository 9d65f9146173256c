"""torchvision's augmentations as batch transforms: RandomCrop, CenterCrop, RandomHorizontalFlip, TenCrop
(+ ten_crop_predict), and Krizhevsky et al.'s PCA colour augmentation (PCALighting, pca_lighting_parameters).

Each test names the law it checks and checks it on random shapes and values (hypothesis); the random
transforms are also checked statistically (every offset drawn, flip frequency, the alphas' distribution).
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex import backend, nn
from minialex.data import (
    CenterCrop,
    Compose,
    PCALighting,
    RandomCrop,
    RandomHorizontalFlip,
    TenCrop,
    ToFloat,
    pca_lighting_parameters,
    ten_crop_predict,
)
from minialex.data.transforms import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS


def distinct(shape, seed=0, dtype=np.float64):
    """Images whose pixels are all different and non-zero: a window of one is found at exactly one place."""
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size) + 1).reshape(shape).astype(dtype)


def windows_matching(image, crop):
    """Every (i, j) with image[:, i:i+h, j:j+w] == crop (all channels at once)."""
    _, height, width = image.shape
    _, h, w = crop.shape
    return [(i, j) for i in range(height - h + 1) for j in range(width - w + 1)
            if np.array_equal(image[:, i:i + h, j:j + w], crop)]


@st.composite
def batch_and_crop(draw, max_side=9):
    """(shape (N, C, H, W), crop size (h, w) or int, padding, seed) with the crop fitting the padded image."""
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    padding = draw(st.integers(0, 3))
    h = draw(st.integers(1, height + 2 * padding))
    w = draw(st.integers(1, width + 2 * padding))
    size = h if h == w and draw(st.booleans()) else (h, w)
    return (n, c, height, width), size, padding, draw(st.integers(0, 2**32 - 1))


def pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


# --------------------------------------------------------------------------- RandomCrop


@settings(max_examples=80, deadline=None)
@given(batch_and_crop())
def test_random_crop_outputs_are_windows_of_the_padded_input_at_valid_offsets(case):
    shape, size, padding, seed = case
    ma.manual_seed(seed % 1000)
    x = distinct(shape, seed)
    out = RandomCrop(size, padding=padding)(x)
    h, w = pair(size)
    assert out.shape == shape[:2] + (h, w) and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    for image, crop in zip(padded, out):
        # windows_matching only looks at offsets inside the padded image: a match is a valid offset,
        # and the same offset holds for every channel.
        assert windows_matching(image, crop), "the crop is no window of the padded image"


def test_random_crop_draws_every_valid_offset_uniformly():
    ma.manual_seed(7)
    x = np.broadcast_to(distinct((1, 1, 3, 4), 1), (4000, 1, 3, 4))
    out = RandomCrop((2, 2), padding=1)(x)  # padded 5 x 6: offsets i in 0..3, j in 0..4
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    counts = {}
    for crop in out:
        (offset,) = windows_matching(padded, crop)  # every 2x2 window holds a non-zero pixel: unambiguous
        counts[offset] = counts.get(offset, 0) + 1
    assert set(counts) == set(itertools.product(range(4), range(5)))
    expected = len(out) / 20
    sigma = np.sqrt(len(out) * (1 / 20) * (19 / 20))
    assert all(abs(c - expected) < 5 * sigma for c in counts.values()), counts


def test_random_crop_crops_images_independently():
    ma.manual_seed(3)
    x = np.broadcast_to(distinct((1, 2, 8, 8)), (50, 2, 8, 8))
    out = RandomCrop(5)(x)
    assert len({windows_matching(x[0], crop)[0] for crop in out}) > 1


def test_random_crop_of_the_whole_image_is_the_identity():
    x = distinct((3, 2, 5, 7))
    np.testing.assert_array_equal(RandomCrop((5, 7))(x), x)


def test_random_crop_keeps_uint8_images():
    ma.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    out = RandomCrop(24, padding=2)(x)
    assert out.dtype == np.uint8 and out.shape == (4, 1, 24, 24)


# --------------------------------------------------------------------------- CenterCrop


def torchvision_center_offset(H, h):
    # torchvision.transforms.functional.center_crop: crop_top = int(round((image_height - crop_height) / 2.0))
    return int(round((H - h) / 2.0))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_center_crop_is_the_window_at_torchvisions_offset(height, width, data):
    h, w = data.draw(st.integers(1, height)), data.draw(st.integers(1, width))
    x = distinct((2, 3, height, width), height * 13 + width)
    out = CenterCrop((h, w))(x)
    top, left = torchvision_center_offset(height, h), torchvision_center_offset(width, w)
    np.testing.assert_array_equal(out, x[:, :, top:top + h, left:left + w])
    # and it is central: the margins on either side differ by at most one pixel
    assert abs(top - (height - h - top)) <= 1 and abs(left - (width - w - left)) <= 1


@pytest.mark.parametrize("H, h, top", [(5, 2, 2), (7, 2, 2), (9, 2, 4), (6, 3, 2), (4, 4, 0), (28, 24, 2), (256, 227, 14)])
def test_center_crop_rounds_half_margins_like_pythons_round(H, h, top):
    # An odd margin 2k+1 gives (2k+1)/2 = k + 0.5, which Python's round sends to the even of k and k+1
    # (5 - 2 = 3 -> round(1.5) = 2; 7 - 2 = 5 -> round(2.5) = 2): torchvision's rule, reproduced exactly.
    x = distinct((1, 1, H, H))
    np.testing.assert_array_equal(CenterCrop(h)(x), x[:, :, top:top + h, top:top + h])


def test_center_crop_matches_torchvision():
    tf = pytest.importorskip("torchvision.transforms.functional")
    import torch

    for H, W, h, w in [(5, 8, 2, 3), (7, 6, 2, 6), (28, 28, 24, 24), (9, 4, 1, 1)]:
        x = distinct((2, 3, H, W))
        theirs = tf.center_crop(torch.from_numpy(x), [h, w]).numpy()
        np.testing.assert_array_equal(CenterCrop((h, w))(x), theirs)


# --------------------------------------------------------------------------- RandomHorizontalFlip


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
       st.floats(0, 1), st.integers(0, 10**6))
def test_horizontal_flip_gives_each_image_or_its_mirror_and_undoes_itself(n, c, height, width, p, seed):
    x = distinct((n, c, height, width), seed)
    flip = RandomHorizontalFlip(p)
    ma.manual_seed(seed)
    out = flip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for image, result in zip(x, out):
        assert np.array_equal(result, image) or np.array_equal(result, image[..., ::-1])
    ma.manual_seed(seed)  # the same draws flip the same images back
    np.testing.assert_array_equal(flip(out), x)


def test_horizontal_flip_with_p_1_mirrors_and_twice_is_the_identity():
    x = distinct((3, 2, 4, 5))
    once = RandomHorizontalFlip(1.0)(x)
    np.testing.assert_array_equal(once, x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(once), x)
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(x), x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_horizontal_flip_frequency_is_p(p):
    ma.manual_seed(11)
    n = 5000
    x = np.broadcast_to(distinct((1, 1, 2, 3)), (n, 1, 2, 3))
    out = RandomHorizontalFlip(p)(x)
    flipped = np.array([not np.array_equal(o, x[0]) for o in out])
    assert abs(flipped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)


# --------------------------------------------------------------------------- TenCrop


def ten_crop_by_hand(x, h, w):
    """torchvision's five_crop then ten_crop (vertical_flip=False), written out one slice at a time."""
    _, _, H, W = x.shape
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))

    def five(img):
        return [img[:, :, 0:h, 0:w],                 # top-left
                img[:, :, 0:h, W - w:W],             # top-right
                img[:, :, H - h:H, 0:w],             # bottom-left
                img[:, :, H - h:H, W - w:W],         # bottom-right
                img[:, :, top:top + h, left:left + w]]  # centre

    return np.stack(five(x) + five(x[..., ::-1]))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 10), st.integers(1, 10), st.data())
def test_ten_crop_is_torchvisions_ten_crops_in_torchvisions_order(n, c, height, width, data):
    h, w = data.draw(st.integers(1, height)), data.draw(st.integers(1, width))
    x = distinct((n, c, height, width), n + height * width)
    out = TenCrop((h, w))(x)
    assert out.shape == (10, n, c, h, w) and out.dtype == x.dtype
    np.testing.assert_array_equal(out, ten_crop_by_hand(x, h, w))
    # The flipped image's corner crops are the mirrors of the original's opposite corners.
    for flipped, original in [(5, 1), (6, 0), (7, 3), (8, 2)]:
        np.testing.assert_array_equal(out[flipped], out[original][..., ::-1])
    if (width - w) % 2 == 0:  # an even margin: the centre crop of the mirror is the mirror of the centre crop
        np.testing.assert_array_equal(out[9], out[4][..., ::-1])


def test_ten_crop_matches_torchvision():
    tf = pytest.importorskip("torchvision.transforms.functional")
    import torch

    x = distinct((2, 3, 9, 8))
    theirs = np.stack([t.numpy() for t in tf.ten_crop(torch.from_numpy(x), [5, 4])])
    np.testing.assert_array_equal(TenCrop((5, 4))(x), theirs)


def test_ten_crop_predict_averages_the_ten_softmaxes():
    ma.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 3, 6))
    x = np.random.default_rng(2).random((3, 2, 7, 5)).astype(np.float32)
    probabilities = ten_crop_predict(model, x, (4, 3))
    assert probabilities.shape == (3, 6) and not probabilities.requires_grad
    weight, bias = (backend.to_numpy(p.data).astype(np.float64) for p in (model[1].weight, model[1].bias))
    expected = np.zeros((3, 6))
    for crop in ten_crop_by_hand(x.astype(np.float64), 4, 3):
        logits = crop.reshape(3, -1) @ weight.T + bias
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected += e / e.sum(axis=1, keepdims=True) / 10
    np.testing.assert_allclose(probabilities.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-6)


def test_ten_crop_predict_accepts_a_tensor_and_rejects_integer_images():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = np.random.default_rng(0).random((2, 1, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(ten_crop_predict(model, ma.tensor(x), 2).numpy(),
                               ten_crop_predict(model, x, 2).numpy())
    with pytest.raises(TypeError, match="floating point"):
        ten_crop_predict(model, (x * 255).astype(np.uint8), 2)


# --------------------------------------------------------------------------- PCALighting


def random_eigen(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return np.sort(rng.random(3))[::-1] * 0.3, q


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7), st.floats(0.0, 2.0), st.booleans(),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 10**6))
def test_pca_lighting_adds_one_constant_rgb_offset_per_image(n, height, width, std, imagenet, dtype, seed):
    x = np.random.default_rng(seed).random((n, 3, height, width)).astype(dtype)
    lighting = PCALighting(std) if imagenet else PCALighting(std, *random_eigen(seed))
    ma.manual_seed(seed)
    out = lighting(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    offset = (out.astype(np.float64) - x)
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(offset, offset[:, :, :1, :1] + np.zeros_like(offset), rtol=0, atol=tolerance)
    # The offset lies in the span of the (scaled) eigenvectors: it is eigenvectors @ (alpha * eigenvalues).
    alpha = np.linalg.solve(lighting.eigenvectors * lighting.eigenvalues, offset[:, :, 0, 0].T).T
    ma.manual_seed(seed)
    np.testing.assert_allclose(offset[:, :, 0, 0], lighting.offsets(n), rtol=0, atol=tolerance)
    assert np.all(np.isfinite(alpha))


@pytest.mark.parametrize("std", [0.1, 0.5])
def test_pca_lighting_alphas_are_normal_with_mean_0_and_sd_std(std):
    ma.manual_seed(21)
    n = 20000
    eigenvalues, eigenvectors = random_eigen(4)
    x = np.full((n, 3, 1, 2), 0.5)
    offset = (PCALighting(std, eigenvalues, eigenvectors)(x) - x)[:, :, 0, 0]
    alpha = np.linalg.solve(eigenvectors * eigenvalues, offset.T).T  # undo the projection: (n, 3)
    assert np.all(np.abs(alpha.mean(axis=0)) < 5 * std / np.sqrt(n))
    np.testing.assert_allclose(alpha.std(axis=0), std, rtol=0.05)
    correlation = np.corrcoef(alpha.T)
    assert np.all(np.abs(correlation - np.eye(3)) < 5 / np.sqrt(n))  # three independent draws
    # Normal, not just the right variance: the fractions within 1 and 2 sd, and the fourth moment (3 sd^4).
    z = alpha / std
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.01 and abs(np.mean(np.abs(z) < 2) - 0.9545) < 0.01
    assert abs(np.mean(z**4) - 3) < 0.15
    # So the offsets' covariance is eigenvectors diag(std^2 eigenvalues^2) eigenvectors^T.
    expected = eigenvectors @ np.diag((std * eigenvalues) ** 2) @ eigenvectors.T
    np.testing.assert_allclose(np.cov(offset.T), expected, rtol=0, atol=0.05 * expected.max())


def test_pca_lighting_defaults_are_fb_resnet_torch_imagenet_pca():
    lighting = PCALighting()
    assert lighting.std == 0.1
    np.testing.assert_array_equal(lighting.eigenvalues, [0.2175, 0.0188, 0.0045])
    np.testing.assert_array_equal(lighting.eigenvectors, [[-0.5675, 0.7192, 0.4009],
                                                           [-0.5808, -0.0045, -0.8140],
                                                           [-0.5836, -0.6948, 0.4203]])
    assert (IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS) == (tuple(lighting.eigenvalues),
                                                             tuple(map(tuple, lighting.eigenvectors)))
    # The columns are (to the 4 published decimals) orthonormal eigenvectors.
    np.testing.assert_allclose(lighting.eigenvectors.T @ lighting.eigenvectors, np.eye(3), atol=2e-4)


def test_pca_lighting_with_std_0_is_the_identity():
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(PCALighting(0.0)(x), x)


# --------------------------------------------------------------------------- pca_lighting_parameters


def pixels_with_covariance(eigenvalues, eigenvectors, n, height, width, seed):
    """Images (n, 3, H, W) in [0, 1] whose pixels' sample covariance is exactly V diag(eigenvalues) V^T."""
    m = n * height * width
    z = np.random.default_rng(seed).standard_normal((3, m))
    z -= z.mean(axis=1, keepdims=True)
    z = np.linalg.solve(np.linalg.cholesky(z @ z.T / (m - 1)), z)  # whitened: z z^T / (m - 1) = I exactly
    x = 0.5 + eigenvectors @ (np.sqrt(eigenvalues)[:, None] * z)
    assert x.min() >= 0 and x.max() <= 1
    return np.moveaxis(x.reshape(3, n, height, width), 0, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=3, max_size=3, unique=True), st.integers(0, 10**6))
def test_pca_lighting_parameters_recover_a_known_covariance(scales, seed):
    scales = np.array(scales)
    if np.min(np.diff(np.sort(scales))) < 1e-3 * scales.max():
        scales = np.array([1.0, 0.5, 0.1])  # well-separated eigenvalues: the eigenvectors are well defined
    eigenvalues = scales / scales.max() * 0.25 / 50  # sd <= 0.0707 ... times |z| <= ~4.5: inside [0, 1]
    _, eigenvectors = random_eigen(seed)
    images = pixels_with_covariance(eigenvalues, eigenvectors, 8, 5, 5, seed)
    found_values, found_vectors = pca_lighting_parameters(images)
    order = np.argsort(eigenvalues)[::-1]
    np.testing.assert_allclose(found_values, eigenvalues[order], rtol=1e-9, atol=1e-15)
    assert np.all(np.diff(found_values) <= 0)  # largest first
    np.testing.assert_allclose(found_vectors.T @ found_vectors, np.eye(3), atol=1e-10)
    # the same eigenvectors, up to sign, and the sign convention: each column's largest component positive
    np.testing.assert_allclose(np.abs(found_vectors.T @ eigenvectors[:, order]), np.eye(3), atol=1e-6)
    columns = np.arange(3)
    assert np.all(found_vectors[np.argmax(np.abs(found_vectors), axis=0), columns] > 0)
    covariance = found_vectors @ np.diag(found_values) @ found_vectors.T
    np.testing.assert_allclose(covariance, np.cov(np.moveaxis(images, 1, 0).reshape(3, -1)), atol=1e-13)


def test_pca_lighting_parameters_of_grey_images_is_brightness_only():
    grey = np.random.default_rng(0).random((5, 1, 6, 6))
    values, vectors = pca_lighting_parameters(np.repeat(grey, 3, axis=1))
    np.testing.assert_allclose(values[0], 3 * grey.var(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(values[1:], 0, atol=1e-15)
    np.testing.assert_allclose(vectors[:, 0], np.full(3, 1 / np.sqrt(3)), rtol=1e-12)


def test_pca_lighting_parameters_feed_pca_lighting():
    ma.manual_seed(0)
    images = ToFloat()(np.random.default_rng(1).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8))
    out = Compose([PCALighting(0.1, *pca_lighting_parameters(images))])(images)
    assert out.shape == images.shape and out.dtype == np.float32


# --------------------------------------------------------------------------- seeding, shared by all random ones


RANDOM_TRANSFORMS = {
    "RandomCrop": lambda: RandomCrop(5, padding=2),
    "RandomHorizontalFlip": lambda: RandomHorizontalFlip(0.5),
    "PCALighting": lambda: PCALighting(0.1),
}


@pytest.mark.parametrize("name", sorted(RANDOM_TRANSFORMS))
def test_random_transforms_repeat_under_manual_seed(name):
    transform = RANDOM_TRANSFORMS[name]()
    x = np.random.default_rng(0).random((32, 3, 8, 8)).astype(np.float32)
    ma.manual_seed(99)
    first, second = transform(x), transform(x)
    ma.manual_seed(99)
    np.testing.assert_array_equal(transform(x), first)
    np.testing.assert_array_equal(transform(x), second)
    assert not np.array_equal(first, second)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [RandomCrop, CenterCrop, TenCrop], ids=["RandomCrop", "CenterCrop", "TenCrop"])
@pytest.mark.parametrize("size, message", [(0, "positive"), (-2, "positive"), ((3, 0), "positive"),
                                           (2.5, "int"), (True, "int"), ((1, 2, 3), "pair"), ("4", "int")])
def test_crops_reject_a_bad_size_naming_it(make, size, message):
    with pytest.raises(ValueError, match=message) as error:
        make(size)
    assert make.__name__ in str(error.value) and repr(size) in str(error.value)


@pytest.mark.parametrize("make", [RandomCrop, CenterCrop, TenCrop], ids=["RandomCrop", "CenterCrop", "TenCrop"])
def test_crops_reject_a_size_larger_than_the_image(make):
    with pytest.raises(ValueError, match=r"crop size \(h, w\) = \(5, 3\) is larger than .*\(H, W\) = \(4, 6\)"):
        make((5, 3))(np.zeros((2, 1, 4, 6)))


def test_random_crop_counts_the_padding_and_rejects_bad_padding():
    assert RandomCrop(6, padding=1)(np.zeros((2, 1, 4, 4))).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="padded by 1"):
        RandomCrop(7, padding=1)(np.zeros((2, 1, 4, 4)))
    for padding in (-1, 1.5, None, True):
        with pytest.raises(ValueError, match="padding must be a non-negative int"):
            RandomCrop(2, padding=padding)


@pytest.mark.parametrize("transform", [RandomCrop(2), CenterCrop(2), TenCrop(2), RandomHorizontalFlip(),
                                       PCALighting()], ids=repr)
def test_transforms_reject_images_that_are_not_n_c_h_w_arrays(transform):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(3, 4, 4\)"):
        transform(np.zeros((3, 4, 4)))
    with pytest.raises(TypeError, match="NumPy or CuPy array"):
        transform([[[[0.0]]]])


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_horizontal_flip_rejects_a_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]"):
        RandomHorizontalFlip(p)


@pytest.mark.parametrize("std", [-0.1, float("nan"), float("inf"), "0.1", None, True])
def test_pca_lighting_rejects_a_bad_std(std):
    with pytest.raises(ValueError, match="std must be a finite number >= 0"):
        PCALighting(std)


def test_pca_lighting_rejects_bad_eigen_data_and_bad_images():
    with pytest.raises(ValueError, match=r"eigenvalues must have shape \(3,\), got shape \(2,\)"):
        PCALighting(0.1, [1.0, 2.0], np.eye(3))
    with pytest.raises(ValueError, match=r"eigenvectors must have shape \(3, 3\).*got shape \(3,\)"):
        PCALighting(0.1, [1.0, 2.0, 3.0], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="both eigenvalues and eigenvectors, or neither"):
        PCALighting(0.1, eigenvalues=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=">= 0"):
        PCALighting(0.1, [1.0, -2.0, 3.0], np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        PCALighting(0.1, [1.0, 2.0, 3.0], np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match=r"3 \(RGB\) channels, got images of shape \(2, 1, 4, 4\)"):
        PCALighting()(np.zeros((2, 1, 4, 4)))
    with pytest.raises(TypeError, match="floating point.*uint8"):
        PCALighting()(np.zeros((2, 3, 4, 4), np.uint8))


def test_pca_lighting_parameters_reject_bad_images():
    with pytest.raises(TypeError, match="floating point.*uint8"):
        pca_lighting_parameters(np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\], got values from 0.0 to 255.0"):
        pca_lighting_parameters(np.array([0.0, 255.0]).repeat(48).reshape(2, 3, 4, 4))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        pca_lighting_parameters(np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="at least 2 pixels"):
        pca_lighting_parameters(np.zeros((1, 3, 1, 1)))


def test_repr_names_the_arguments():
    assert repr(RandomCrop(24, padding=2)) == "RandomCrop(size=(24, 24), padding=2)"
    assert repr(CenterCrop((3, 4))) == "CenterCrop(size=(3, 4))"
    assert repr(RandomHorizontalFlip(0.25)) == "RandomHorizontalFlip(p=0.25)"
    assert repr(TenCrop(5)) == "TenCrop(size=(5, 5))"
    assert repr(PCALighting(0.2)).startswith("PCALighting(std=0.2, eigenvalues=[0.2175")


# --------------------------------------------------------------------------- CuPy


needs_cuda = pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("make", [lambda: RandomCrop((5, 4), padding=2), lambda: CenterCrop((3, 5)),
                                  lambda: RandomHorizontalFlip(0.5), lambda: TenCrop((5, 6)),
                                  lambda: PCALighting(0.3)],
                         ids=["RandomCrop", "CenterCrop", "RandomHorizontalFlip", "TenCrop", "PCALighting"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_cupy_arrays_give_the_numpy_result_under_the_same_seed(make, dtype):
    cp = backend.cupy_module()
    transform = make()
    if isinstance(transform, PCALighting) and dtype == np.uint8:
        pytest.skip("PCALighting takes float images")
    x = (np.random.default_rng(0).random((16, 3, 9, 8)) * 255).astype(dtype)
    ma.manual_seed(4)
    expected = transform(x)
    ma.manual_seed(4)
    out = transform(cp.asarray(x))
    assert isinstance(out, cp.ndarray) and out.dtype == expected.dtype
    np.testing.assert_allclose(cp.asnumpy(out), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_cupy_ten_crop_predict_and_pca_parameters_match_numpy():
    cp = backend.cupy_module()
    ma.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = np.random.default_rng(0).random((4, 3, 6, 6)).astype(np.float32)
    on_cpu = ten_crop_predict(model, x, 4).numpy()
    model.to("cuda")
    on_gpu = ten_crop_predict(model, cp.asarray(x), 4)
    np.testing.assert_allclose(on_gpu.numpy(), on_cpu, rtol=1e-4, atol=1e-6)
    values, vectors = pca_lighting_parameters(cp.asarray(x))
    assert isinstance(values, np.ndarray)
    expected_values, expected_vectors = pca_lighting_parameters(x)
    np.testing.assert_allclose(values, expected_values, rtol=1e-5)
    np.testing.assert_allclose(vectors, expected_vectors, atol=1e-4)
