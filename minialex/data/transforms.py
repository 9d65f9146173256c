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
