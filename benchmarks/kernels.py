"""One layer's work as (forward, backward) closures, for minialex and for PyTorch, on any device.

Shared by the CPU suite (``to=np.asarray``, torch on "cpu") and the GPU suite
(``to=cupy.asarray``, torch on "cuda"), so both time exactly the functions the
docs and the tests show, against the same PyTorch calls.
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
            if "cache" in state:  # done with, as the autograd's graph is after a backward: reuse its columns
                conv.release_columns(state["cache"])
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


def torch_kernel(torch, kind, spec, x, rng, device="cpu"):
    """(forward, backward) closures running the same layer through torch.nn.functional on ``device``.

    The backward is ``out.backward(grad)`` with the leaves' grads cleared first;
    for "sgd" the forward is one torch.optim.SGD step and there is no backward.
    """
    TF = torch.nn.functional
    device = torch.device(device)
    X = torch.from_numpy(x).to(device)
    state, leaves = {}, []
    if kind == "sgd":
        parameter = torch.nn.Parameter(X)
        parameter.grad = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)).to(device)
        optimizer = torch.optim.SGD([parameter], lr=0.01, momentum=0.9, weight_decay=5e-4)
        return optimizer.step, None
    if kind == "conv":
        weight = torch.from_numpy((rng.standard_normal((spec["out"], x.shape[1] // spec["groups"], spec["k"], spec["k"]))
                                   * 0.01).astype(np.float32)).to(device).requires_grad_()
        bias = torch.zeros(spec["out"], device=device, requires_grad=True)
        leaves = [weight, bias] + ([] if spec.get("first") else [X.requires_grad_()])

        def run():
            return TF.conv2d(X, weight, bias, spec["stride"], spec["pad"], 1, spec["groups"])
    elif kind == "linear":
        weight = torch.from_numpy((rng.standard_normal((spec["out"], x.shape[1])) * 0.01).astype(np.float32)) \
            .to(device).requires_grad_()
        bias = torch.zeros(spec["out"], device=device, requires_grad=True)
        leaves = [weight, bias, X.requires_grad_()]

        def run():
            return TF.linear(X, weight, bias)
    elif kind == "xent":
        target = torch.from_numpy(rng.integers(0, x.shape[1], x.shape[0])).to(device)
        leaves = [X.requires_grad_()]

        def run():
            return TF.cross_entropy(X, target)
    else:
        leaves = [X.requires_grad_()]
        run = {
            "pool": lambda: TF.max_pool2d(X, 3, 2),
            "lrn": lambda: TF.local_response_norm(X, 5, 1e-4, 0.75, 2.0),
            "relu": lambda: TF.relu(X),
            "dropout": lambda: TF.dropout(X, 0.5, True),
        }[kind]

    def forward():
        state["out"] = run()

    def backward():
        for leaf in leaves:
            leaf.grad = None
        state["out"].backward(state["dout"], retain_graph=True)

    forward()
    state["dout"] = torch.randn_like(state["out"])
    return forward, backward
