"""Batch transforms: each maps an array of images (N, C, H, W) to another.

They work on whole batches (one vectorised call per batch, not one per image)
and on NumPy or CuPy arrays alike. Random ones draw from the engine's RNG, so
``ma.manual_seed`` repeats them.
"""

import numpy as np

from .. import backend


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, images):
        for transform in self.transforms:
            images = transform(images)
        return images

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class ToFloat:
    """uint8 pixels 0..255 -> float32 (or ``dtype``) in [0, 1]."""

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def __call__(self, images):
        return images.astype(self.dtype) * self.dtype.type(1 / 255)

    def __repr__(self):
        return f"ToFloat({self.dtype})"


class Normalize:
    """(x - mean) / std, per channel (scalars for one channel)."""

    # MNIST's training-set pixel mean and std on the [0, 1] scale.
    MNIST = (0.1307, 0.3081)
    FASHION_MNIST = (0.2860, 0.3530)

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, np.float64))
        self.std = np.atleast_1d(np.asarray(std, np.float64))
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std!r}")

    def __call__(self, images):
        if images.ndim != 4 or len(self.mean) not in (1, images.shape[1]):
            raise ValueError(f"Normalize: expected (N, C, H, W) with C = {len(self.mean)}, got {images.shape}")
        xp = backend.get_array_module(images)
        shape = (1, -1, 1, 1)
        mean = xp.asarray(self.mean.reshape(shape), dtype=images.dtype)
        inverse_std = xp.asarray((1 / self.std).reshape(shape), dtype=images.dtype)
        return (images - mean) * inverse_std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Pad:
    """Zero-pad ``padding`` pixels on every side."""

    def __init__(self, padding):
        if not _is_int(padding) or padding < 0:
            raise ValueError(f"Pad: padding must be a non-negative int, got {padding!r}")
        self.padding = padding

    def __call__(self, images):
        xp = backend.get_array_module(images)
        p = self.padding
        return xp.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))

    def __repr__(self):
        return f"Pad({self.padding})"


class Resize:
    """Bilinear resize of (N, C, H, W) to (N, C, size, size), pixel centres aligned (as PIL / torch's
    ``interpolate(align_corners=False)``). Used to feed 28x28 digits to the 227x227 AlexNet."""

    def __init__(self, size):
        if not _is_int(size) or size < 1:
            raise ValueError(f"Resize: size must be a positive int, got {size!r}")
        self.size = size

    @staticmethod
    def _weights(in_size, out_size):
        # Output pixel i samples input coordinate (i + 0.5) * in/out - 0.5, clamped to the image.
        position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        position = np.clip(position, 0, in_size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    def __call__(self, images):
        xp = backend.get_array_module(images)
        dtype = images.dtype if np.issubdtype(images.dtype, np.floating) else np.float32
        images = images.astype(dtype, copy=False)
        _, _, height, width = images.shape
        low, high, frac = (xp.asarray(a) for a in self._weights(height, self.size))
        rows = images[:, :, low] * (1 - frac[:, None]).astype(dtype) + images[:, :, high] * frac[:, None].astype(dtype)
        low, high, frac = (xp.asarray(a) for a in self._weights(width, self.size))
        return rows[..., low] * (1 - frac).astype(dtype) + rows[..., high] * frac.astype(dtype)

    def __repr__(self):
        return f"Resize({self.size})"


class RandomShiftCrop:
    """Shift each image by up to ``max_shift`` pixels in x and y (zero fill): pad, then crop at random.

    The augmentation of the paper's random 224 crops, scaled to digits.
    """

    def __init__(self, max_shift):
        if not _is_int(max_shift) or max_shift < 0:
            raise ValueError(f"RandomShiftCrop: max_shift must be a non-negative int, got {max_shift!r}")
        self.max_shift = max_shift

    def __call__(self, images):
        if self.max_shift == 0:
            return images
        xp = backend.get_array_module(images)
        n, _, height, width = images.shape
        s = self.max_shift
        padded = xp.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
        rng = backend.cpu_rng()
        dy = rng.integers(0, 2 * s + 1, size=n)
        dx = rng.integers(0, 2 * s + 1, size=n)
        # Gather rows dy + 0..H-1 and columns dx + 0..W-1 of each padded image at once.
        rows = xp.asarray(dy[:, None] + np.arange(height))[:, None, :, None]
        cols = xp.asarray(dx[:, None] + np.arange(width))[:, None, None, :]
        batch = xp.arange(n)[:, None, None, None]
        channels = xp.arange(images.shape[1])[None, :, None, None]
        return padded[batch, channels, rows, cols]

    def __repr__(self):
        return f"RandomShiftCrop({self.max_shift})"


# --------------------------------------------------------------------------- torchvision's augmentations, per batch
#
# Each random transform draws its numbers for the whole batch at once from the engine's CPU generator
# (``backend.cpu_rng()``, seeded by ``ma.manual_seed``), one draw per image, and then moves the images on
# whatever device they live. So the same seed gives the same crops, flips and colour offsets on NumPy and
# CuPy arrays alike.


def _size_pair(name, size):
    """``size`` as (h, w): an int for a square, or a pair of ints, every one positive."""
    pair = (size, size) if _is_int(size) else size
    if not isinstance(pair, tuple | list) or len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise ValueError(f"{name}: size must be a positive int or an (h, w) pair of positive ints, got {size!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name}: size must be positive, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_batch(name, images):
    if not backend.is_array(images):
        raise TypeError(f"{name}: expected a NumPy or CuPy array of images, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected images of shape (N, C, H, W), got shape {tuple(images.shape)}")


def _check_fits(name, size, height, width, what="the image"):
    h, w = size
    if h > height or w > width:
        raise ValueError(f"{name}: crop size (h, w) = {size} is larger than {what}, (H, W) = ({height}, {width})")


class RandomCrop:
    """Cut an (h, w) window out of each image at a random place: torchvision's ``RandomCrop``.

    ``padding`` zero pixels are added on every side first. Each image gets its own top-left corner
    (i, j), uniform over every offset that keeps the window inside the (padded) image:
    i in 0..H + 2p - h, j in 0..W + 2p - w. (N, C, H, W) -> (N, C, h, w), dtype kept.
    """

    def __init__(self, size, padding=0):
        self.size = _size_pair("RandomCrop", size)
        if not _is_int(padding) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, got {padding!r}")
        self.padding = int(padding)

    def __call__(self, images):
        _check_batch("RandomCrop", images)
        xp = backend.get_array_module(images)
        p = self.padding
        if p:
            images = xp.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
        n, channels, height, width = images.shape
        _check_fits("RandomCrop", self.size, height, width, f"the image padded by {p}" if p else "the image")
        h, w = self.size
        rng = backend.cpu_rng()
        top = rng.integers(0, height - h + 1, size=n)  # upper bound exclusive: every valid offset
        left = rng.integers(0, width - w + 1, size=n)
        # Gather rows top + 0..h-1 and columns left + 0..w-1 of each image at once.
        rows = xp.asarray(top[:, None] + np.arange(h))[:, None, :, None]
        cols = xp.asarray(left[:, None] + np.arange(w))[:, None, None, :]
        batch = xp.arange(n)[:, None, None, None]
        return images[batch, xp.arange(channels)[None, :, None, None], rows, cols]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


def _center_offsets(size, height, width):
    """torchvision's centre: top = int(round((H - h) / 2.0)), Python's round (halves to even)."""
    h, w = size
    return int(round((height - h) / 2.0)), int(round((width - w) / 2.0))


class CenterCrop:
    """The (h, w) window in the middle of every image: torchvision's ``CenterCrop``.

    The top-left corner is ``(int(round((H - h) / 2.0)), int(round((W - w) / 2.0)))``, the rounding
    torchvision uses (Python's ``round``: an odd margin of 2k+1 pixels leaves k or k+1 above,
    whichever is even). Unlike torchvision, a size larger than the image is an error, not zero padding.
    """

    def __init__(self, size):
        self.size = _size_pair("CenterCrop", size)

    def __call__(self, images):
        _check_batch("CenterCrop", images)
        _, _, height, width = images.shape
        _check_fits("CenterCrop", self.size, height, width)
        top, left = _center_offsets(self.size, height, width)
        h, w = self.size
        return images[:, :, top:top + h, left:left + w]

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``: torchvision's ``RandomHorizontalFlip``.

    One uniform u in [0, 1) per image; the image is flipped where u < p (so p = 0 never, p = 1 always).
    """

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, int | float | np.integer | np.floating) or not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, images):
        _check_batch("RandomHorizontalFlip", images)
        xp = backend.get_array_module(images)
        flip = backend.cpu_rng().random(images.shape[0]) < self.p
        return xp.where(xp.asarray(flip)[:, None, None, None], images[..., ::-1], images)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class TenCrop:
    """The ten (h, w) crops of test-time augmentation: (N, C, H, W) -> (10, N, C, h, w).

    torchvision's ``TenCrop(size)`` order (``vertical_flip=False``): the top-left, top-right,
    bottom-left, bottom-right and centre crops of the images, then the same five crops of the
    horizontally flipped images. (The flipped image's top-left crop is the mirror of the original's
    top-right crop.) The paper averages the network's softmax over these ten patches.
    """

    def __init__(self, size):
        self.size = _size_pair("TenCrop", size)

    @staticmethod
    def _five(images, size):
        _, _, height, width = images.shape
        h, w = size
        top, left = _center_offsets(size, height, width)
        corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
        return [images[:, :, y:y + h, x:x + w] for y, x in corners]

    def __call__(self, images):
        _check_batch("TenCrop", images)
        xp = backend.get_array_module(images)
        _check_fits("TenCrop", self.size, *images.shape[2:])
        return xp.stack(self._five(images, self.size) + self._five(images[..., ::-1], self.size))

    def __repr__(self):
        return f"TenCrop(size={self.size})"


def ten_crop_predict(model, images, size):
    """The class probabilities of ``model`` averaged over the ten crops of each image, (N, classes).

    ``images`` (N, C, H, W) float array (NumPy or CuPy) or Tensor. Each of the ten (h, w) crops of
    ``TenCrop(size)`` goes through the model as one batch of N (10 forward passes, no graph recorded);
    the softmax of each pass's logits is summed and divided by 10. Returns a Tensor. Put the model in
    ``eval()`` mode first, as for any prediction (dropout off).
    """
    from .. import functional as F
    from ..autograd import Tensor, no_grad

    if isinstance(images, Tensor):
        images = images.data
    _check_batch("ten_crop_predict", images)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"ten_crop_predict: images must be floating point (see ToFloat), got dtype {images.dtype}")
    crops = TenCrop(size)(images)
    with no_grad():
        total = None
        for crop in crops:
            logits = model(Tensor(crop))
            if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
                raise ValueError(f"ten_crop_predict: the model must return (N, classes) logits with "
                                 f"N = {images.shape[0]}, got shape {logits.shape}")
            probabilities = F.softmax(logits, axis=1)
            total = probabilities if total is None else total + probabilities
        return total / 10


# ImageNet's RGB principal components, as published with Facebook's ResNet training recipe
# (github.com/facebook/fb.resnet.torch, datasets/imagenet.lua, the ``pca`` table, "computed from random subset
# of ImageNet training images"), for RGB values scaled to [0, 1]. Columns of the eigenvector matrix are the
# eigenvectors, rows are R, G, B; the first (eigenvalue 0.2175) is brightness, the second red against blue.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class PCALighting:
    """Krizhevsky et al. (2012)'s colour augmentation: shift each image's colour along the principal
    components of the dataset's RGB pixels.

    For image n draw alpha_n ~ N(0, std^2) (three values) and add to every pixel of it the one RGB offset

        offset_n = eigenvectors @ (alpha_n * eigenvalues)        (3,) = (3, 3) @ (3,)

    ``eigenvalues`` (3,) and ``eigenvectors`` (3, 3), columns the eigenvectors, default to the ImageNet
    values of fb.resnet.torch (``IMAGENET_EIGENVALUES`` / ``IMAGENET_EIGENVECTORS``), which are for RGB
    values in [0, 1]: apply it before ``Normalize``. ``pca_lighting_parameters`` computes them for
    another dataset. Images (N, 3, H, W), floating point; the output keeps their dtype. std = 0 is the
    identity (and draws nothing), as in fb.resnet.torch's ``Lighting``.
    """

    def __init__(self, std=0.1, eigenvalues=None, eigenvectors=None):
        if isinstance(std, bool) or not isinstance(std, int | float | np.integer | np.floating) \
                or not np.isfinite(std) or std < 0:
            raise ValueError(f"PCALighting: std must be a finite number >= 0, got {std!r}")
        if (eigenvalues is None) != (eigenvectors is None):
            raise ValueError("PCALighting: give both eigenvalues and eigenvectors, or neither (ImageNet's)")
        if eigenvalues is None:
            eigenvalues, eigenvectors = IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS
        eigenvalues = np.array(backend.to_numpy(eigenvalues) if backend.is_array(eigenvalues) else eigenvalues,
                               dtype=np.float64)
        eigenvectors = np.array(backend.to_numpy(eigenvectors) if backend.is_array(eigenvectors) else eigenvectors,
                                dtype=np.float64)
        if eigenvalues.shape != (3,):
            raise ValueError(f"PCALighting: eigenvalues must have shape (3,), got shape {eigenvalues.shape}")
        if eigenvectors.shape != (3, 3):
            raise ValueError(f"PCALighting: eigenvectors must have shape (3, 3) (columns the eigenvectors), "
                             f"got shape {eigenvectors.shape}")
        if not (np.all(np.isfinite(eigenvalues)) and np.all(eigenvalues >= 0)):
            raise ValueError(f"PCALighting: eigenvalues must be finite and >= 0 (a covariance's), "
                             f"got {eigenvalues.tolist()}")
        if not np.all(np.isfinite(eigenvectors)):
            raise ValueError(f"PCALighting: eigenvectors must be finite, got {eigenvectors.tolist()}")
        self.std = float(std)
        self.eigenvalues = eigenvalues
        self.eigenvectors = eigenvectors

    def offsets(self, n):
        """Draw the (n, 3) RGB offsets of n images: row k is eigenvectors @ (alpha_k * eigenvalues)."""
        alpha = backend.cpu_rng().normal(0.0, self.std, size=(n, 3))
        return (alpha * self.eigenvalues) @ self.eigenvectors.T

    def __call__(self, images):
        _check_batch("PCALighting", images)
        if images.shape[1] != 3:
            raise ValueError(f"PCALighting: expected 3 (RGB) channels, got images of shape {tuple(images.shape)}")
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"PCALighting: images must be floating point in [0, 1] (see ToFloat), "
                            f"got dtype {images.dtype}")
        if self.std == 0:
            return images
        xp = backend.get_array_module(images)
        offset = xp.asarray(self.offsets(images.shape[0]).astype(images.dtype))
        return images + offset[:, :, None, None]

    def __repr__(self):
        return (f"PCALighting(std={self.std}, eigenvalues={self.eigenvalues.tolist()}, "
                f"eigenvectors={self.eigenvectors.tolist()})")


def pca_lighting_parameters(images):
    """(eigenvalues (3,), eigenvectors (3, 3)) of the covariance of the RGB pixels of ``images``.

    ``images`` (N, 3, H, W), floating point, values in [0, 1]: every pixel of every image is one sample
    of an RGB vector x; the covariance is sum (x - mean)(x - mean)^T / (M - 1) over the M = `N*H*W` pixels.
    Eigenvalues are sorted from largest to smallest (round-off negatives clipped to 0), the columns of
    ``eigenvectors`` follow them; each column's sign is fixed so its largest component is positive (the
    sign is otherwise arbitrary and does not matter to ``PCALighting``, whose alphas are symmetric about 0).
    Returns float64 NumPy arrays, ready for ``PCALighting(std, eigenvalues, eigenvectors)``.
    """
    _check_batch("pca_lighting_parameters", images)
    if images.shape[1] != 3:
        raise ValueError(f"pca_lighting_parameters: expected 3 (RGB) channels, got images of shape "
                         f"{tuple(images.shape)}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"pca_lighting_parameters: images must be floating point in [0, 1] (see ToFloat), "
                        f"got dtype {images.dtype}")
    n, _, height, width = images.shape
    if n * height * width < 2:
        raise ValueError(f"pca_lighting_parameters: need at least 2 pixels, got images of shape {tuple(images.shape)}")
    xp = backend.get_array_module(images)
    low, high = float(images.min()), float(images.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        raise ValueError(f"pca_lighting_parameters: pixel values must lie in [0, 1], got values from {low} to {high}")
    pixels = xp.moveaxis(images, 1, 0).reshape(3, -1).astype(xp.float64)  # (3, M)
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    covariance = backend.to_numpy(centred @ centred.T) / (pixels.shape[1] - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = np.clip(eigenvalues[::-1], 0, None), eigenvectors[:, ::-1]
    largest = np.argmax(np.abs(eigenvectors), axis=0)
    eigenvectors = eigenvectors * np.sign(eigenvectors[largest, np.arange(3)])
    return eigenvalues.copy(), np.ascontiguousarray(eigenvectors)
