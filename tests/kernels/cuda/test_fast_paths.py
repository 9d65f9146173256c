"""The CUDA fast paths compute what the generic kernels compute, on CuPy and on NumPy.

Every test runs a kernel three ways: the NumPy path (the reference), the
generic CuPy path (fast paths switched off) and the fast path, in float32 and
float64, over AlexNet's shapes at a small batch and over odd geometries.
Pure data movement (im2col, max-pool, ReLU) must agree bit for bit; col2im and
the max-pool backward add their terms in the generic order, so they do too.
Skipped, module and all, where CuPy or a CUDA device is missing; nothing here
imports CuPy at the top (it comes from ``backend.cupy_module()``).
"""

import numpy as np
import pytest

import minialex as ma
from minialex import backend
from minialex.kernels import activation, conv, dropout, lrn, pool, sgd, softmax_xent
from minialex.kernels import cuda as fast_paths
from minialex.kernels.cuda import conv as cuda_conv
from minialex.kernels.cuda import elementwise as cuda_elementwise
from minialex.kernels.cuda import lrn as cuda_lrn
from minialex.kernels.cuda import pool as cuda_pool
from minialex.kernels.cuda import sgd as cuda_sgd

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device"),
]

DTYPES = [np.float32, np.float64]


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.fixture
def cp():
    return backend.cupy_module()


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts the calls that reach each fast path, to show the dispatch really took it."""
    counts = {}
    targets = [
        (cuda_conv, "im2col"), (cuda_conv, "col2im"),
        (cuda_pool, "max_pool2d_forward"), (cuda_pool, "max_pool2d_backward"),
        (cuda_lrn, "local_response_norm_forward"), (cuda_lrn, "local_response_norm_backward"),
        (cuda_elementwise, "relu_forward"), (cuda_elementwise, "relu_backward"),
        (cuda_elementwise, "dropout_forward"), (cuda_elementwise, "cross_entropy_backward"),
        (cuda_sgd, "sgd_update"),
    ]
    for module, name in targets:
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return counts


def generic_and_fast(function, *args):
    """``function(*args)`` on the generic CuPy path, then on the fast path."""
    with fast_paths.use_fast_paths(False):
        generic = function(*args)
    with fast_paths.use_fast_paths(True):
        fast = function(*args)
    return generic, fast


def host(array):
    return backend.to_numpy(array)


# --------------------------------------------------------------------------- im2col / col2im and conv2d

# (N, C, H, W), (kh, kw), stride, padding, groups: AlexNet's five convolutions at batch 2, then odd ones.
CONV_GEOMETRIES = [
    ((2, 3, 227, 227), (11, 11), (4, 4), (0, 0), 1),
    ((2, 96, 27, 27), (5, 5), (1, 1), (2, 2), 2),
    ((2, 256, 13, 13), (3, 3), (1, 1), (1, 1), 1),
    ((2, 384, 13, 13), (3, 3), (1, 1), (1, 1), 2),
    ((3, 4, 7, 9), (3, 2), (2, 3), (1, 0), 2),
    ((2, 6, 6, 6), (1, 1), (1, 1), (0, 0), 3),
    ((2, 3, 8, 7), (2, 2), (3, 3), (0, 0), 1),
    ((1, 2, 5, 5), (3, 3), (1, 2), (2, 2), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_im2col_and_col2im_fast_paths_equal_generic_and_numpy(cp, fast_calls, geometry, dtype):
    shape, (kh, kw), stride, padding, _ = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    reference = conv.im2col(x, kh, kw, stride, padding)
    generic, fast = generic_and_fast(conv.im2col, cp.asarray(x), kh, kw, stride, padding)
    assert fast.dtype == dtype and fast.shape == reference.shape
    np.testing.assert_array_equal(host(generic), reference)
    np.testing.assert_array_equal(host(fast), reference)

    col = rng.standard_normal(reference.shape).astype(dtype)
    reference = conv.col2im(col, shape, kh, kw, stride, padding)
    generic, fast = generic_and_fast(conv.col2im, cp.asarray(col), shape, kh, kw, stride, padding)
    assert fast.dtype == dtype and fast.shape == shape
    # The gather adds a pixel's terms in the generic order: the same float sums.
    np.testing.assert_array_equal(host(fast), host(generic))
    np.testing.assert_allclose(host(fast), reference, **tolerance(dtype))
    assert fast_calls == {"im2col": 1, "col2im": 1}


def test_col2im_is_the_adjoint_of_im2col_on_the_fast_path(cp):
    rng = np.random.default_rng(1)
    x = cp.asarray(rng.standard_normal((2, 3, 9, 8)))
    unfolded = cuda_conv.im2col(x, 3, 2, (2, 2), (1, 1))
    col = cp.asarray(rng.standard_normal(unfolded.shape))
    left = float((unfolded * col).sum())
    right = float((x * cuda_conv.col2im(col, x.shape, 3, 2, (2, 2), (1, 1))).sum())
    assert left == pytest.approx(right, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_conv2d_with_fast_paths_equals_generic_and_numpy(cp, geometry, dtype):
    shape, (kh, kw), stride, padding, groups = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    out_channels = 4 * groups
    weight = (rng.standard_normal((out_channels, shape[1] // groups, kh, kw)) * 0.1).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    out, cache = conv.conv2d_forward(x, weight, bias, stride, padding, groups)
    dout = rng.standard_normal(out.shape).astype(dtype)
    reference = (out,) + conv.conv2d_backward(dout, cache)

    def run(*arrays):
        out, cache = conv.conv2d_forward(*arrays[:3], stride, padding, groups)
        return (out,) + conv.conv2d_backward(arrays[3], cache)

    generic, fast = generic_and_fast(run, *(cp.asarray(a) for a in (x, weight, bias, dout)))
    for ref, gen, fst in zip(reference, generic, fast):
        scale = dict(rtol=tolerance(dtype)["rtol"], atol=tolerance(dtype)["rtol"] * max(np.abs(ref).max(), 1.0))
        np.testing.assert_allclose(host(fst), host(gen), **scale)
        np.testing.assert_allclose(host(fst), ref, **scale)


# --------------------------------------------------------------------------- max-pool

# (N, C, H, W), kernel, stride, padding: AlexNet's three pools, then odd ones (a 17x17 window
# needs an int32 argmax).
POOL_GEOMETRIES = [
    ((2, 96, 55, 55), (3, 3), (2, 2), (0, 0)),
    ((2, 256, 27, 27), (3, 3), (2, 2), (0, 0)),
    ((2, 256, 13, 13), (3, 3), (2, 2), (0, 0)),
    ((2, 3, 7, 8), (2, 3), (1, 2), (1, 1)),
    ((2, 3, 6, 6), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 9, 9), (3, 3), (3, 2), (1, 0)),
    ((2, 2, 6, 6), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 20, 20), (17, 17), (3, 3), (8, 8)),
]


def pool_input(kind, shape, dtype, rng):
    if kind == "ties":  # three values only: most windows hold several maxima
        return rng.integers(0, 3, shape).astype(dtype)
    if kind == "negative":  # all below zero: padding (-inf) must still never win
        return (-np.abs(rng.standard_normal(shape)) - 5).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "ties", "negative"])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=str)
def test_max_pool_fast_path_equals_generic_and_numpy(cp, fast_calls, geometry, kind, dtype):
    shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(3)
    x = pool_input(kind, shape, dtype, rng)
    out, cache = pool.max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = pool.max_pool2d_backward(dout, cache)

    def run(x_gpu, dout_gpu):
        out, cache = pool.max_pool2d_forward(x_gpu, kernel, stride, padding)
        return out, cache, pool.max_pool2d_backward(dout_gpu, cache)

    generic, fast = generic_and_fast(run, cp.asarray(x), cp.asarray(dout))
    for out_gpu, cache_gpu, dx_gpu in (generic, fast):
        np.testing.assert_array_equal(host(out_gpu), out)
        # Ties pick the FIRST maximum in row-major window order, as NumPy (and PyTorch) do.
        assert cache_gpu.argmax.dtype == cache.argmax.dtype
        np.testing.assert_array_equal(host(cache_gpu.argmax), cache.argmax)
        assert tuple(cache_gpu[1:]) == tuple(cache[1:])
        np.testing.assert_array_equal(host(dx_gpu), dx)
    assert fast_calls == {"max_pool2d_forward": 1, "max_pool2d_backward": 1}


def test_max_pool_backward_fast_path_accepts_the_generic_cache(cp):
    rng = np.random.default_rng(4)
    x = cp.asarray(rng.integers(0, 4, (2, 5, 11, 11)).astype(np.float32))
    with fast_paths.use_fast_paths(False):
        out, generic_cache = pool.max_pool2d_forward(x, 3, 2, 1)
    dout = cp.asarray(rng.standard_normal(out.shape).astype(np.float32))
    with fast_paths.use_fast_paths(False):
        expected = pool.max_pool2d_backward(dout, generic_cache)
    np.testing.assert_array_equal(host(cuda_pool.max_pool2d_backward(dout, generic_cache)), host(expected))


# --------------------------------------------------------------------------- LRN

# (shape, size): AlexNet's two LRN layers at batch 2, even sizes, windows wider than the
# channels, and inputs with one or three trailing axes.
LRN_CASES = [
    ((2, 96, 55, 55), 5),
    ((2, 256, 27, 27), 5),
    ((2, 37, 3, 5), 5),     # channel blocks of 16 that do not divide C
    ((3, 21, 2, 3), 6),     # an even window across a block boundary
    ((1, 17, 4, 4), 9),     # a window wider than the last block
    ((2, 8, 5, 5), 4),
    ((2, 8, 5, 5), 2),
    ((2, 8, 5, 5), 1),
    ((2, 3, 4, 4), 7),
    ((2, 3, 4, 4), 6),
    ((2, 6, 10), 3),
    ((2, 5, 2, 3, 4), 4),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LRN_CASES, ids=str)
def test_lrn_fast_path_equals_generic_and_numpy(cp, fast_calls, case, dtype):
    shape, size = case
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    alpha, beta, k = 1e-2, 0.75, 2.0  # a large alpha, so the neighbours matter
    out, cache = lrn.local_response_norm_forward(x, size, alpha, beta, k)
    dout = rng.standard_normal(shape).astype(dtype)
    dx = lrn.local_response_norm_backward(dout, cache)

    def run(x_gpu, dout_gpu):
        out, cache = lrn.local_response_norm_forward(x_gpu, size, alpha, beta, k)
        return out, cache, lrn.local_response_norm_backward(dout_gpu, cache)

    generic, fast = generic_and_fast(run, cp.asarray(x), cp.asarray(dout))
    for out_gpu, cache_gpu, dx_gpu in (generic, fast):
        assert isinstance(cache_gpu, lrn.LRNCache) and out_gpu.dtype == dtype and dx_gpu.dtype == dtype
        np.testing.assert_allclose(host(out_gpu), out, **tolerance(dtype))
        np.testing.assert_allclose(host(cache_gpu.scale), cache.scale, **tolerance(dtype))
        np.testing.assert_allclose(host(cache_gpu.scale_pow), cache.scale_pow, **tolerance(dtype))
        np.testing.assert_allclose(host(dx_gpu), dx, **tolerance(dtype))
    assert fast_calls == {"local_response_norm_forward": 1, "local_response_norm_backward": 1}


def test_lrn_caches_are_interchangeable_between_paths(cp):
    rng = np.random.default_rng(6)
    x = cp.asarray(rng.standard_normal((2, 10, 4, 4)))
    dout = cp.asarray(rng.standard_normal((2, 10, 4, 4)))
    _, fast_cache = cuda_lrn.local_response_norm_forward(x, 4, 1e-2, 0.75, 1.0)
    with fast_paths.use_fast_paths(False):
        _, generic_cache = lrn.local_response_norm_forward(x, 4, 1e-2, 0.75, 1.0)
        generic_backward_of_fast_cache = lrn.local_response_norm_backward(dout, fast_cache)
    fast_backward_of_generic_cache = cuda_lrn.local_response_norm_backward(dout, generic_cache)
    np.testing.assert_allclose(host(fast_backward_of_generic_cache), host(generic_backward_of_fast_cache),
                               rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- ReLU, dropout, cross-entropy


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_fast_path_equals_generic_and_numpy(cp, fast_calls, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 96, 55, 55)).astype(dtype)
    x[0, 0, 0, :10] = 0  # the gradient at exactly 0 is 0
    x[0, 0, 1, 0] = np.nan  # NaN passes through the forward
    y, positive = activation.relu_forward(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = activation.relu_backward(dout, positive)

    def run(x_gpu, dout_gpu):
        y, positive = activation.relu_forward(x_gpu)
        return y, positive, activation.relu_backward(dout_gpu, positive)

    generic, fast = generic_and_fast(run, cp.asarray(x), cp.asarray(dout))
    for y_gpu, positive_gpu, dx_gpu in (generic, fast):
        assert y_gpu.dtype == dtype and positive_gpu.dtype == np.bool_
        np.testing.assert_array_equal(host(y_gpu), y)
        np.testing.assert_array_equal(host(positive_gpu), positive)
        np.testing.assert_array_equal(host(dx_gpu), dx)
    assert fast_calls == {"relu_forward": 1, "relu_backward": 1}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.5, 0.3, 0.9])
def test_dropout_fast_path_draws_the_generic_mask_from_the_same_seed(cp, fast_calls, p, dtype):
    x = cp.asarray(np.random.default_rng(8).standard_normal((128, 9216)).astype(dtype))
    ma.manual_seed(11)
    with fast_paths.use_fast_paths(False):
        y_generic, mask_generic = dropout.dropout_forward(x, p)
    ma.manual_seed(11)
    y_fast, mask_fast = dropout.dropout_forward(x, p)
    assert fast_calls == {"dropout_forward": 1}
    assert mask_fast.dtype == dtype and y_fast.dtype == dtype
    np.testing.assert_array_equal(host(mask_fast), host(mask_generic))
    np.testing.assert_array_equal(host(y_fast), host(y_generic))
    # The NumPy path's law: the mask is 0 or 1/(1-p), kept with probability 1-p, and y = x * mask.
    mask = host(mask_fast)
    scale = dtype(1.0 / (1.0 - p))
    assert set(np.unique(mask)) <= {dtype(0), scale}
    assert abs((mask != 0).mean() - (1 - p)) < 0.01
    np.testing.assert_array_equal(host(y_fast), host(x) * mask)
    np.testing.assert_array_equal(host(dropout.dropout_backward(x, mask_fast)), host(x) * mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target_dtype", [np.int64, np.int32])
def test_cross_entropy_gradient_fast_path_equals_generic_and_numpy(cp, fast_calls, dtype, target_dtype):
    rng = np.random.default_rng(9)
    logits = (rng.standard_normal((128, 1000)) * 5).astype(dtype)
    target = rng.integers(0, 1000, 128).astype(target_dtype)
    dloss = np.asarray(0.37, dtype=dtype)
    _, cache = softmax_xent.cross_entropy_forward(logits, target)
    reference = softmax_xent.cross_entropy_backward(dloss, cache)

    def run(logits_gpu, target_gpu, dloss_gpu):
        _, cache = softmax_xent.cross_entropy_forward(logits_gpu, target_gpu)
        return softmax_xent.cross_entropy_backward(dloss_gpu, cache)

    generic, fast = generic_and_fast(run, cp.asarray(logits), cp.asarray(target), cp.asarray(dloss))
    assert fast.dtype == dtype and fast.shape == reference.shape
    np.testing.assert_allclose(host(fast), host(generic), **tolerance(dtype))
    np.testing.assert_allclose(host(fast), reference, **tolerance(dtype))
    assert fast_calls == {"cross_entropy_backward": 1}


# --------------------------------------------------------------------------- SGD


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, weight_decay, nesterov", [
    (0.0, 0.0, False), (0.0, 5e-4, False), (0.9, 0.0, False), (0.9, 5e-4, False), (0.9, 5e-4, True),
])
def test_fused_sgd_equals_generic_and_numpy_over_three_steps(cp, fast_calls, momentum, weight_decay, nesterov, dtype):
    rng = np.random.default_rng(10)
    start = rng.standard_normal((64, 33)).astype(dtype)
    grads = [rng.standard_normal(start.shape).astype(dtype) for _ in range(3)]
    results = {}
    for path in ("numpy", "generic", "fast"):
        on_gpu = path != "numpy"
        param = cp.asarray(start) if on_gpu else start.copy()
        scratch = cp.empty_like(param) if on_gpu else np.empty_like(param)
        buffer = None
        with fast_paths.use_fast_paths(path == "fast"):
            for grad in grads:
                grad = cp.asarray(grad) if on_gpu else grad
                buffer = sgd.sgd_update(param, grad, buffer, scratch, 0.05, momentum, weight_decay, nesterov)
        results[path] = (host(param), None if buffer is None else host(buffer))
        if on_gpu and buffer is not None:
            assert backend.is_cuda_array(buffer) and buffer.device.id == param.device.id
    for path in ("generic", "fast"):
        np.testing.assert_allclose(results[path][0], results["numpy"][0], **tolerance(dtype))
        if momentum:
            np.testing.assert_allclose(results[path][1], results["numpy"][1], **tolerance(dtype))
        else:
            assert results[path][1] is None
    assert fast_calls == {"sgd_update": 3}


def test_fused_sgd_first_step_sets_the_buffer_to_the_gradient_and_updates_in_place(cp):
    param = cp.asarray(np.linspace(-1, 1, 10, dtype=np.float32))
    pointer = param.data.ptr
    grad = cp.asarray(np.linspace(2, 3, 10, dtype=np.float32))
    buffer = cuda_sgd.sgd_update(param, grad, None, 0.1, 0.9, 0.0, False)
    assert param.data.ptr == pointer  # updated in place, in the same memory
    np.testing.assert_array_equal(host(buffer), host(grad))  # PyTorch's first-step rule: buf = g
    np.testing.assert_allclose(host(param), np.linspace(-1, 1, 10) - 0.1 * np.linspace(2, 3, 10),
                               rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- build once, switch off


def test_each_kernel_is_compiled_once_and_reused(cp):
    x = cp.asarray(np.random.default_rng(12).standard_normal((2, 4, 9, 9)).astype(np.float32))
    cuda_pool.max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    before = cuda_pool._forward_kernel.cache_info()
    for _ in range(3):
        cuda_pool.max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    after = cuda_pool._forward_kernel.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 3


def test_switching_the_fast_paths_off_takes_the_generic_path(cp, fast_calls):
    x = cp.asarray(np.ones((1, 2, 4, 4), np.float32))
    with fast_paths.use_fast_paths(False):
        pool.max_pool2d_forward(x, 2, 2, 0)
        activation.relu_forward(x)
    assert fast_calls == {}
    assert fast_paths.enabled
    pool.max_pool2d_forward(x, 2, 2, 0)
    assert fast_calls == {"max_pool2d_forward": 1}


def test_float16_falls_back_to_the_generic_path(cp, fast_calls):
    x = cp.asarray(np.random.default_rng(13).standard_normal((1, 2, 6, 6)).astype(np.float16))
    out, _ = pool.max_pool2d_forward(x, 3, 2, 0)
    assert fast_calls == {} and out.dtype == np.float16
