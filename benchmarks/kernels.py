"""minialex's kernels as (forward, backward) closures at one layer's shapes, on any device.

Shared by the CPU suite (``to=np.asarray``) and the GPU suite (``to=cupy.asarray``),
so both time exactly the functions the docs and the tests show.
"""

import numpy as np

from minialex.kernels import activation, conv, dropout, linear, lrn, pool, sgd, softmax_xent


def minialex_kernel(kind, spec, x, rng, to):
    """(forward, backward) closures over minialex's kernel ``kind``; ``to`` puts NumPy arrays on the device.

    The backward reuses the cache of the last forward. For "sgd" the forward
    is one update of a (4096, 9216) parameter and there is no backward.
    """
    state = {}
    X = to(x)
    if kind == "conv":
        weight = to((rng.standard_normal((spec["out"], x.shape[1] // spec["groups"], spec["k"], spec["k"])) * 0.01)
                    .astype(np.float32))
        bias = to(np.zeros(spec["out"], np.float32))
        stride, padding = (spec["stride"],) * 2, (spec["pad"],) * 2

        def forward():
            state["out"], state["cache"] = conv.conv2d_forward(X, weight, bias, stride, padding, spec["groups"])

        def backward():
            # conv1's input is the data: like the training step, skip its input gradient.
            conv.conv2d_backward(state["dout"], state["cache"], need_input_grad=not spec.get("first"))
    elif kind == "pool":
        def forward():
            state["out"], state["cache"] = pool.max_pool2d_forward(X, (3, 3), (2, 2), (0, 0))

        def backward():
            pool.max_pool2d_backward(state["dout"], state["cache"])
    elif kind == "lrn":
        def forward():
            state["out"], state["cache"] = lrn.local_response_norm_forward(X, 5, 1e-4, 0.75, 2.0)

        def backward():
            lrn.local_response_norm_backward(state["dout"], state["cache"])
    elif kind == "relu":
        def forward():
            state["out"], state["cache"] = activation.relu_forward(X)

        def backward():
            activation.relu_backward(state["dout"], state["cache"])
    elif kind == "dropout":
        def forward():
            state["out"], state["cache"] = dropout.dropout_forward(X, 0.5)

        def backward():
            dropout.dropout_backward(state["dout"], state["cache"])
    elif kind == "linear":
        weight = to((rng.standard_normal((spec["out"], x.shape[1])) * 0.01).astype(np.float32))
        bias = to(np.zeros(spec["out"], np.float32))

        def forward():
            state["out"], state["cache"] = linear.linear_forward(X, weight, bias)

        def backward():
            linear.linear_backward(state["dout"], state["cache"])
    elif kind == "xent":
        target = to(rng.integers(0, x.shape[1], x.shape[0]))
        dloss = to(np.asarray(1.0, np.float32))

        def forward():
            state["out"], state["cache"] = softmax_xent.cross_entropy_forward(X, target)

        def backward():
            softmax_xent.cross_entropy_backward(dloss, state["cache"])
    elif kind == "sgd":
        grad = to(rng.standard_normal(x.shape).astype(np.float32))
        scratch = to(np.empty_like(x))

        def forward():
            state["buffer"] = sgd.sgd_update(X, grad, state.get("buffer"), scratch, 0.01, 0.9, 5e-4, False)

        return forward, None
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    forward()
    state["dout"] = to(rng.standard_normal(tuple(state["out"].shape)).astype(np.float32))
    return forward, backward
