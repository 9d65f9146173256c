"""The fully connected layer (AlexNet's fc6, fc7, fc8).

    forward:  y = x @ W.T + b          x (*, in), W (out, in), b (out,) -> y (*, out)
    backward: dx = dy @ W              (*, in)
              dW = dy.T @ x            (out, in), summed over every leading row
              db = dy summed over the leading rows

The weight layout (out_features, in_features) is PyTorch's. Leading
dimensions (*) are flattened into rows for the two GEMMs.
"""

def linear_forward(x, weight, bias):
    """y = x @ W.T + b. The cache is (x, weight): dW needs x, dx needs W."""
    out = x @ weight.T
    if bias is not None:
        out += bias  # in place on the fresh GEMM output: no second (*, out) array
    return out, (x, weight)


def linear_backward(dout, cache, need_input_grad=True, need_weight_grad=True, need_bias_grad=True):
    """(dx, dW, db) of linear_forward; each is None when not needed."""
    x, weight = cache
    rows_dout = dout.reshape(-1, dout.shape[-1])
    dx = dout @ weight if need_input_grad else None
    dweight = rows_dout.T @ x.reshape(-1, x.shape[-1]) if need_weight_grad else None
    dbias = rows_dout.sum(axis=0) if need_bias_grad else None
    return dx, dweight, dbias
