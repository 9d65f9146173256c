"""In-place operators and version counters, with PyTorch's rules.

``t += u`` keeps the Tensor object and its data array; on a leaf that
requires grad it is only allowed under ``no_grad``. Every Function remembers
the versions of the tensors it saved for backward, and backward refuses to
use a value that changed since.
"""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import nn
from minialex.optim import SGD

IN_PLACE = {
    "+=": (lambda t, u: t.__iadd__(u), np.add),
    "-=": (lambda t, u: t.__isub__(u), np.subtract),
    "*=": (lambda t, u: t.__imul__(u), np.multiply),
    "/=": (lambda t, u: t.__itruediv__(u), np.divide),
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(IN_PLACE)), st.sampled_from([(3,), (1, 3), (2, 3), ()]), st.integers(0, 2**32 - 1))
def test_in_place_operator_under_no_grad_keeps_the_object_and_array_and_equals_numpy(operator, other_shape, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(3, 2)
    values = layer.weight.numpy()
    other = rng.uniform(0.5, 2.0, size=other_shape).astype(np.float32)
    weight, array, version = layer.weight, layer.weight.data, layer.weight._version
    with ma.no_grad():
        result = IN_PLACE[operator][0](layer.weight, ma.tensor(other))
        layer.weight = result  # what Python does with `layer.weight += u`
    assert layer.weight is weight and layer.weight.data is array
    assert isinstance(layer.weight, nn.Parameter)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight._version == version + 1
    np.testing.assert_array_equal(layer.weight.numpy(), IN_PLACE[operator][1](values, other).astype(np.float32))


def test_parameter_changed_with_plus_equals_under_no_grad_stays_registered_and_trained():
    layer = nn.Linear(2, 2)
    with ma.no_grad():
        layer.weight += 0.1
    assert "weight" in layer.state_dict()
    optimizer = SGD(layer.parameters(), lr=0.1)
    assert any(p is layer.weight for group in optimizer.param_groups for p in group["params"])
    before = layer.weight.numpy()
    layer(ma.tensor([[1.0, 2.0]])).sum().backward()
    optimizer.step()
    assert not np.array_equal(layer.weight.numpy(), before)


def test_in_place_on_a_leaf_that_requires_grad_outside_no_grad_raises():
    w = ma.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w += 1.0
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w.zero_()
    assert w.numpy().tolist() == [1.0, 2.0] and w._version == 0


def test_in_place_on_a_non_leaf_is_recorded_and_gives_the_out_of_place_gradient():
    x = ma.tensor([1.0, 2.0, -0.5], dtype="float64", requires_grad=True)
    w = ma.tensor([0.5, -1.0, 3.0], dtype="float64", requires_grad=True)
    h = x * 2.0
    h += w
    h *= x  # Mul saves its inputs: the in-place op must keep the old h for w's and x's gradients
    h /= 4.0
    h -= x
    h.sum().backward()
    in_place_grads = (x.grad.numpy(), w.grad.numpy())

    x2 = ma.tensor(x.numpy(), dtype="float64", requires_grad=True)
    w2 = ma.tensor(w.numpy(), dtype="float64", requires_grad=True)
    (((x2 * 2.0 + w2) * x2) / 4.0 - x2).sum().backward()
    np.testing.assert_array_equal(in_place_grads[0], x2.grad.numpy())
    np.testing.assert_array_equal(in_place_grads[1], w2.grad.numpy())


def test_a_function_that_used_a_value_before_an_in_place_update_gets_the_gradient_of_the_old_value():
    x = ma.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x * 2.0
    y = h + 1.0  # uses h before the update
    h *= 3.0  # h is now 6x; y still depends on 2x
    (y + h).sum().backward()
    assert x.grad.numpy().tolist() == [8.0, 8.0]  # 2 through y, 6 through the new h


def test_in_place_update_of_a_tensor_with_itself():
    x = ma.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x * 2.0
    h += h  # 4x
    h *= h  # 16 x^2
    h.sum().backward()
    assert x.grad.numpy().tolist() == [32.0, 64.0]


def test_in_place_on_a_zero_dimensional_result():
    x = ma.tensor(3.0, dtype="float64", requires_grad=True)
    total = x * x  # a 0-d result: an array the update can write into
    total += x
    total.backward()
    assert total.item() == 12.0 and x.grad.item() == 7.0


def test_in_place_result_that_would_broadcast_or_change_dtype_raises():
    t = ma.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="shape"):
        t += ma.tensor([[1.0, 2.0], [3.0, 4.0]])
    counts = ma.tensor(np.array([1, 2], dtype=np.int64))
    with pytest.raises(RuntimeError, match="can't be cast"):
        counts /= 2
    assert counts.numpy().tolist() == [1, 2]


def test_in_place_on_a_view_of_a_tensor_changes_the_base_under_no_grad():
    base = ma.tensor(np.zeros((2, 3), np.float32))
    view = base.reshape(6)
    view += 1.0
    assert base.numpy().tolist() == [[1.0] * 3] * 2
    assert base._version == view._version == 1


def test_recorded_in_place_update_of_a_view_or_of_a_viewed_tensor_is_refused():
    x = ma.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    h = x * 2.0
    view = h.reshape(2, 2)
    with pytest.raises(RuntimeError, match="is a view of another tensor's data"):
        view *= 3.0
    with pytest.raises(RuntimeError, match="is viewed by another tensor through its data"):
        h *= 3.0  # view's graph would still say view = reshape(old h)
    assert h.numpy().tolist() == [2.0, 4.0, 6.0, 8.0]


def test_zero_and_fill_under_no_grad():
    w = ma.tensor([1.0, 2.0], requires_grad=True)
    with ma.no_grad():
        w.fill_(3.0)
        assert w.numpy().tolist() == [3.0, 3.0]
        w.zero_()
    assert w.numpy().tolist() == [0.0, 0.0] and w._version == 2


# --------------------------------------------------------------------------- version counters


def test_optimizer_step_between_forward_and_backward_raises_naming_the_parameter():
    layer = nn.Linear(3, 2)
    optimizer = SGD(layer.parameters(), lr=0.1)
    loss = layer(ma.tensor(np.ones((4, 3), np.float32))).sum()
    loss.backward(retain_graph=True)
    optimizer.step()  # changes the weight that Linear saved for backward
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation: input 1 \(Parameter of shape \(2, 3\)"):
        loss.backward()


def test_in_place_change_of_a_saved_input_raises_at_backward():
    x = ma.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    y = h * h  # saves h
    h += 1.0
    with pytest.raises(RuntimeError, match="Mul is at version 1; expected version 0"):
        y.sum().backward()


def test_in_place_change_of_an_unsaved_input_is_allowed():
    x = ma.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    y = h + 1.0  # Add saves nothing
    h += 5.0
    y.sum().backward()
    assert x.grad.numpy().tolist() == [2.0, 2.0]


def test_in_place_change_of_a_saved_output_raises_at_backward():
    x = ma.tensor([0.5, 1.0], requires_grad=True)
    y = x.exp()  # exp's backward uses its output
    with ma.no_grad():
        y *= 2.0
    with pytest.raises(RuntimeError, match="its output of Exp"):
        y.sum().backward()


def test_change_through_a_view_is_seen_by_the_function_that_saved_the_base():
    x = ma.tensor(np.ones((2, 2), np.float32), requires_grad=True)
    h = x * 1.0
    y = h * h
    view = h.reshape(4)
    with ma.no_grad():
        view += 1.0
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_cross_entropy_keeps_its_own_copy_of_the_targets():
    rng = np.random.default_rng(0)
    logits_np = rng.normal(size=(4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 2])
    logits = ma.tensor(logits_np, requires_grad=True)
    loss = F.cross_entropy(logits, target)
    target[:] = 0  # the caller reuses its label buffer before backward
    loss.backward()
    probabilities = np.exp(logits_np - logits_np.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    expected = probabilities.copy()
    expected[np.arange(4), [0, 2, 1, 2]] -= 1
    np.testing.assert_allclose(logits.grad.numpy(), expected / 4, rtol=1e-5, atol=1e-7)


def test_detach_shares_data_and_version_counter():
    x = ma.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    d = x.detach()
    d += 1.0  # d is a leaf without grad: allowed, and x sees it
    assert x.numpy().tolist() == [2.0, 3.0]
    with pytest.raises(RuntimeError, match="in-place"):
        y.sum().backward()


def test_in_place_threads_do_not_share_a_counter():
    # Counters belong to tensors, not to threads: two threads bumping two tensors keep exact counts.
    tensors = [ma.tensor(np.zeros(3, np.float32)) for _ in range(2)]

    def bump(t):
        for _ in range(200):
            t += 1.0

    threads = [threading.Thread(target=bump, args=(t,)) for t in tensors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [t._version for t in tensors] == [200, 200]
