"""Float32 tolerances from a stated round-off bound, against a float64 reference.

A tolerance taken from another library's float32 error on one CPU fails on the
next CPU: BLAS libraries block and order their sums differently (OpenBLAS or
MKL, AVX2 or AVX-512, one thread or several). The bounds here hold for any
order of summation:

* one sum of n rounded products, plus a bias (Higham's gamma_n):
  |float32 - exact| <= (n + 2) * eps32 * (sum of |terms|);
* a chain of ``layers`` such sums, each well conditioned (no heavy
  cancellation, so each layer's relative error reaches the output at most
  once): |float32 - exact| <= layers * (n + 2) * eps32 * max |exact|,
  n the longest sum in the chain.

The exact value is a float64 computation (error ~1e-16, negligible here).
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
SMALLEST_SUBNORMAL32 = float(np.finfo(np.float32).smallest_subnormal)


def float64_reference_and_magnitude(torch_fn, arrays, upstream):
    """``torch_fn`` in float64 on ``arrays`` with output gradient ``upstream`` (the reference),
    and again on |arrays| with |upstream|: for a bilinear op (conv, linear, matmul) the second
    run gives, for every output and gradient, the sum of |terms| it adds up.

    Returns (reference out, [reference grads], magnitude out, [magnitude grads]).
    """
    import torch  # noqa: PLC0415 - only for tests that skip without it

    def run(values, grad_output):
        inputs = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in values]
        out = torch_fn(*inputs)
        out.backward(torch.tensor(np.asarray(grad_output, np.float64)))
        return out.detach().numpy(), [t.grad.numpy() for t in inputs]

    reference, reference_grads = run(arrays, upstream)
    magnitude, magnitude_grads = run([np.abs(a) for a in arrays], np.abs(upstream))
    return reference, reference_grads, magnitude, magnitude_grads


def assert_within_float32_round_off(actual, reference, magnitude, longest_sum):
    """|float32 result - float64 reference| <= (n + 2) * eps32 * (sum of |terms|) + one subnormal.

    The worst-case bound of a float32 sum of n rounded products (one more rounding
    for each product and the bias), n the longest sum the op does. It holds
    whatever order or blocking the BLAS sums in, on any CPU or thread count.
    """
    bound = (longest_sum + 2) * EPS32 * np.asarray(magnitude) + SMALLEST_SUBNORMAL32
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(reference, np.float64))
    assert np.all(error <= bound), f"largest error / bound: {np.max(error / bound):.3g}"


def assert_within_chain_round_off(actual, reference, longest_sum, layers, err_msg=""):
    """|float32 result - float64 reference| <= layers * (n + 2) * eps32 * max |reference|.

    For a chain of ``layers`` well-conditioned sums (see the module docstring);
    a test using it says why its chain has no heavy cancellation.
    """
    reference = np.asarray(reference, np.float64)
    bound = layers * (longest_sum + 2) * EPS32 * max(np.abs(reference).max(initial=0.0), SMALLEST_SUBNORMAL32)
    error = np.abs(np.asarray(actual, np.float64) - reference).max(initial=0.0)
    assert error <= bound, f"{err_msg}: largest error {error:.3g} > bound {bound:.3g}"
