"""amp.autocast: which ops run in float16 and which in float32, float32 gradients for float32 weights,
nesting, per-thread isolation, and float16 accuracy within a stated bound against a float64 reference.

The bound. A float16 input has a relative rounding error of at most u = 2**-11 (float16's unit
round-off). A sum of n products of rounded inputs, accumulated in float16 or in anything wider,
and plus a bias, has an error of at most

    |float16 result - exact| <= (n + 2) * u * (sum of |terms|) + (n + 2) * 2**-24

(Higham's gamma_n with u = 2**-11; the last term allows one float16 subnormal spacing per
rounding, for results near zero). It holds whatever order or precision the sum is taken in,
so it holds for NumPy (which accumulates float16 products in float32, see the last test) and
for cuBLAS alike.
"""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import amp, nn

U16 = 2.0 ** -11
SUBNORMAL16 = 2.0 ** -24


def assert_within_float16_round_off(actual, reference, magnitude, longest_sum):
    """|float16 result - float64 reference| <= (n + 2) * u * (sum of |terms|) + (n + 2) * 2**-24."""
    bound = (longest_sum + 2) * (U16 * np.asarray(magnitude, np.float64) + SUBNORMAL16)
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(reference, np.float64))
    assert np.all(error <= bound), f"largest error / bound: {np.max(error / bound):.3g}"


def floats32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- the op lists


def test_gemm_ops_give_float16_and_precision_sensitive_ops_give_float32():
    rng = np.random.default_rng(0)
    x = ma.tensor(floats32(rng, 2, 3, 6, 6))
    conv = nn.Conv2d(3, 4, 3)
    linear = nn.Linear(6, 5)
    with amp.autocast():
        features = conv(x)
        assert features.dtype == np.float16
        assert linear(ma.tensor(floats32(rng, 4, 6))).dtype == np.float16
        assert F.matmul(ma.tensor(floats32(rng, 2, 3)), ma.tensor(floats32(rng, 3, 2))).dtype == np.float16
        assert (ma.tensor(floats32(rng, 2, 3)) @ ma.tensor(floats32(rng, 3, 2))).dtype == np.float16
        logits = linear(ma.tensor(floats32(rng, 4, 6)))
        for result in (F.softmax(logits), F.log_softmax(logits), F.cross_entropy(logits, np.array([0, 1, 2, 3])),
                       F.local_response_norm(features, 3), logits.sum(), logits.exp(), F.log(logits * logits),
                       logits ** 2):
            assert result.dtype == np.float32
        # Ops on neither list run in the dtype they are given, as in PyTorch.
        for result in (F.relu(features), F.max_pool2d(features, 2), F.dropout(features, 0.5), features.mean(),
                       features.max(), F.flatten(features)):
            assert result.dtype == np.float16
    assert conv(x).dtype == np.float32  # after the block, as before it


def test_float64_inputs_are_left_in_float64_as_pytorch_does():
    x = ma.tensor(np.ones((2, 3)), dtype=np.float64)
    w = ma.tensor(np.ones((4, 3)), dtype=np.float64)
    with amp.autocast():
        assert F.linear(x, w).dtype == np.float64
        assert F.softmax(x).dtype == np.float64


def test_parameters_stay_float32_and_get_float32_gradients_through_the_recorded_cast():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with amp.autocast():
        loss = F.cross_entropy(model(ma.tensor(floats32(rng, 2, 1, 6, 6))), np.array([0, 2]))
    assert loss.dtype == np.float32
    loss.backward()
    for p in model.parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32
        assert np.all(np.isfinite(p.grad.numpy())) and np.any(p.grad.numpy() != 0)


# --------------------------------------------------------------------------- accuracy against float64


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), rows=st.integers(1, 8), inner=st.integers(1, 300), out=st.integers(1, 8))
def test_linear_under_autocast_is_within_the_float16_bound_of_float64_forward_and_backward(seed, rows, inner, out):
    rng = np.random.default_rng(seed)
    x, w, b, upstream = (floats32(rng, rows, inner), floats32(rng, out, inner), floats32(rng, out),
                         floats32(rng, rows, out))
    xt, wt, bt = (ma.tensor(a, requires_grad=True) for a in (x, w, b))
    with amp.autocast():
        y = F.linear(xt, wt, bt)
        # d(sum(y * upstream))/dy = upstream: the mixed product promotes to float32, the sum is float32.
        (y * ma.tensor(upstream)).sum().backward()
    x64, w64, b64, u64 = (a.astype(np.float64) for a in (x, w, b, upstream))
    assert_within_float16_round_off(y.numpy(), x64 @ w64.T + b64, np.abs(x64) @ np.abs(w64.T) + np.abs(b64), inner)
    assert_within_float16_round_off(xt.grad.numpy(), u64 @ w64, np.abs(u64) @ np.abs(w64), out)
    assert_within_float16_round_off(wt.grad.numpy(), u64.T @ x64, np.abs(u64.T) @ np.abs(x64), rows)
    assert_within_float16_round_off(bt.grad.numpy(), u64.sum(0), np.abs(u64).sum(0), rows)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 16), channels=st.integers(1, 4), size=st.integers(3, 7))
def test_conv2d_under_autocast_is_within_the_float16_bound_of_float64_forward_and_backward(seed, channels, size):
    torch = pytest.importorskip("torch")
    from tests.float32_round_off import float64_reference_and_magnitude  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    x, w, b = floats32(rng, 2, channels, size, size), floats32(rng, 3, channels, 3, 3), floats32(rng, 3)
    upstream = floats32(rng, 2, 3, size - 2, size - 2)
    xt, wt, bt = (ma.tensor(a, requires_grad=True) for a in (x, w, b))
    with amp.autocast():
        y = F.conv2d(xt, wt, bt)
        (y * ma.tensor(upstream)).sum().backward()
    reference, grads, magnitude, grad_magnitudes = float64_reference_and_magnitude(
        torch.nn.functional.conv2d, [x, w, b], upstream)
    assert_within_float16_round_off(y.numpy(), reference, magnitude, channels * 9)
    assert_within_float16_round_off(xt.grad.numpy(), grads[0], grad_magnitudes[0], 3 * 9)
    assert_within_float16_round_off(wt.grad.numpy(), grads[1], grad_magnitudes[1], 2 * (size - 2) ** 2)
    assert_within_float16_round_off(bt.grad.numpy(), grads[2], grad_magnitudes[2], 2 * (size - 2) ** 2)


def test_softmax_of_float16_logits_is_computed_in_float32():
    """A float16 softmax over 4096 classes would round each probability to 11 bits; the float32
    one equals the float64 softmax of the same (float16) logits to float32 accuracy."""
    logits = np.random.default_rng(2).standard_normal((2, 4096)).astype(np.float16)
    with amp.autocast():
        probabilities = F.softmax(ma.tensor(logits)).numpy()
    exact = np.exp(logits.astype(np.float64))
    exact /= exact.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, exact, rtol=4096 * 2.0 ** -24)


def test_numpy_float16_matmul_accumulates_in_float32_here():
    """What the docs say about the CPU: 2048 + 4095 ones. A float16 running sum sticks at 2048
    (2049 is not a float16); a float32 one reaches 6143, rounded once to the float16 6144."""
    a = np.ones((1, 4096), np.float16)
    a[0, 0] = 2048
    assert (a @ np.ones((4096, 1), np.float16))[0, 0] == np.float16(6143)
    with amp.autocast():
        assert F.matmul(ma.tensor(a), ma.tensor(np.ones((4096, 1), np.float32))).item() == 6144


# --------------------------------------------------------------------------- the context manager


def test_autocast_nests_and_enabled_false_switches_it_off_inside():
    assert not amp.is_autocast_enabled() and amp.get_autocast_dtype() is None
    with amp.autocast():
        assert amp.get_autocast_dtype() == np.float16
        with amp.autocast(enabled=False):
            assert not amp.is_autocast_enabled()
            assert F.linear(ma.tensor(np.ones((1, 2), np.float32)), ma.tensor(np.ones((3, 2), np.float32))).dtype \
                == np.float32
            with amp.autocast(np.float16):
                assert amp.is_autocast_enabled()
            assert not amp.is_autocast_enabled()
        assert amp.is_autocast_enabled()
    assert not amp.is_autocast_enabled()


def test_autocast_is_restored_after_an_exception_and_works_as_a_decorator():
    with pytest.raises(KeyError), amp.autocast():
        raise KeyError("inside")
    assert not amp.is_autocast_enabled()

    @amp.autocast()
    def forward(x):
        return amp.is_autocast_enabled(), F.matmul(x, x).dtype

    assert forward(ma.tensor(np.ones((2, 2), np.float32))) == (True, np.float16)
    assert not amp.is_autocast_enabled()
    block = amp.autocast()
    with block, block:  # one object entered twice: each exit restores what its entry replaced
        pass
    assert not amp.is_autocast_enabled()


def test_autocast_is_per_thread():
    inside_started, main_checked = threading.Event(), threading.Event()
    seen = {}

    def other_thread():
        seen["at start"] = amp.is_autocast_enabled()  # the main thread is inside autocast now
        with amp.autocast():
            inside_started.set()
            main_checked.wait(10)
            seen["own block"] = F.matmul(ma.tensor(np.ones((2, 2), np.float32)),
                                         ma.tensor(np.ones((2, 2), np.float32))).dtype

    with amp.autocast():
        thread = threading.Thread(target=other_thread)
        thread.start()
        inside_started.wait(10)
    seen["main while other is inside"] = amp.is_autocast_enabled()
    seen["main op"] = F.matmul(ma.tensor(np.ones((2, 2), np.float32)), ma.tensor(np.ones((2, 2), np.float32))).dtype
    main_checked.set()
    thread.join(10)
    assert seen == {"at start": False, "own block": np.float16, "main while other is inside": False,
                    "main op": np.float32}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", np.float32, "half16", 3, None])
def test_a_dtype_other_than_float16_is_refused_naming_argument_value_and_expectation(dtype):
    with pytest.raises(ValueError) as info:
        amp.autocast(dtype=dtype)
    message = str(info.value)
    assert "dtype" in message and repr(dtype) in message and "float16" in message


def test_float16_is_accepted_by_name_and_as_a_numpy_type_and_enabled_must_be_a_bool():
    for dtype in ("float16", np.float16, np.dtype("float16")):
        assert amp.autocast(dtype=dtype).dtype == np.float16
    with pytest.raises(TypeError, match="enabled must be True or False, got 'no'"):
        amp.autocast(enabled="no")


@pytest.mark.gpu
def test_autocast_on_the_gpu_gives_float16_products_and_float32_gradients():
    cp = pytest.importorskip("cupy")
    if not ma.cuda.is_available():
        pytest.skip("no CUDA device")
    linear = nn.Linear(8, 4).to("cuda")
    x = ma.tensor(np.ones((2, 8), np.float32), device="cuda")
    with amp.autocast():
        y = linear(x)
        loss = F.cross_entropy(y, cp.array([0, 1]))
    assert y.dtype == np.float16 and loss.dtype == np.float32
    loss.backward()
    assert linear.weight.grad.dtype == np.float32 and isinstance(linear.weight.grad.data, cp.ndarray)
