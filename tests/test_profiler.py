"""The op profiler: what it records on a real AlexNet training step, its table, its trace, and its edges.

The main fixture profiles one SGD step of ``models.alexnet_mnist()`` at batch
4 while a spy on ``Function.__call__`` counts the Functions really called, so
the profile is checked against an independent count, and its FLOPs against
``models.summary``. The GPU test at the end is skipped without CuPy and a GPU.
"""

import collections
import json
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import autograd, models, nn, optim, profiler
from minialex.autograd import Function

BATCH = 4


def _batch(device="cpu"):
    rng = np.random.default_rng(0)
    x = ma.tensor(rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32), device=device)
    y = ma.tensor(np.arange(BATCH) % 10, device=device)
    return x, y


def _training_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


@pytest.fixture(scope="module")
def step():
    """One profiled training step: (model, profile, Counter of the Function classes called)."""
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch()
    _training_step(model, optimizer, x, y)  # a first step outside the profile: warm caches

    called = collections.Counter()
    original_call = Function.__call__

    def counting_call(self, *inputs, **options):
        called[type(self).__name__] += 1
        return original_call(self, *inputs, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Function, "__call__", counting_call)
        with profiler.profile() as prof:
            _training_step(model, optimizer, x, y)
    return model, prof, called


def _count(events, phase):
    return collections.Counter(e.name for e in events if e.phase == phase)


# --------------------------------------------------------------------------- what is recorded


def test_every_function_called_shows_up_forward_and_backward_as_often_as_called(step):
    _, prof, called = step
    events = prof.events()
    assert _count(events, "forward") == called
    # Every op of this step is on the path from the loss to a parameter: each has its backward.
    assert _count(events, "backward") == called
    assert {e.phase for e in events} == {"forward", "backward"}


def test_counts_equal_the_layers_of_the_model(step):
    model, prof, _ = step
    forward = _count(prof.events(), "forward")
    layers = collections.Counter(type(m).__name__ for m in model.modules())
    for layer, function in [("Conv2d", "Conv2d"), ("Linear", "Linear"), ("ReLU", "ReLU"),
                            ("MaxPool2d", "MaxPool2d"), ("LocalResponseNorm", "LocalResponseNorm"),
                            ("Dropout", "Dropout")]:
        assert forward[function] == layers[layer] > 0, layer
    assert forward["CrossEntropy"] == 1 and forward["Reshape"] == 1  # the loss, the flatten


def test_events_carry_shapes_dtype_device_and_link_forward_to_backward(step):
    _, prof, _ = step
    events = prof.events()
    first_conv = next(e for e in events if e.name == "Conv2d" and e.phase == "forward")
    assert first_conv.input_shapes == ((BATCH, 1, 28, 28), (24, 1, 5, 5), (24,))
    assert first_conv.output_shapes == ((BATCH, 24, 28, 28),)
    assert (first_conv.dtype, first_conv.device, first_conv.timed_by) == ("float32", "cpu", "host clock")
    backward = [e for e in events if e.sequence_number == first_conv.sequence_number and e.phase == "backward"]
    assert len(backward) == 1
    # The gradient comes in shaped like the output; the input x needs none, so its slot is None.
    assert backward[0].input_shapes == ((BATCH, 24, 28, 28),)
    assert backward[0].output_shapes == (None, (24, 1, 5, 5), (24,))
    forward_numbers = [e.sequence_number for e in events if e.phase == "forward"]
    assert len(set(forward_numbers)) == len(forward_numbers)  # one number per forward call
    assert all(e.duration_us >= 0 and e.start_us >= 0 for e in events)
    assert len({e.thread_id for e in events}) == 1


def test_forward_flops_equal_models_summary_for_the_same_layers(step):
    model, prof, _ = step
    summary_rows = models.summary(model, (BATCH, 1, 28, 28)).rows
    forward = [e for e in prof.events() if e.phase == "forward"]
    for layer in ("Conv2d", "Linear", "ReLU", "MaxPool2d", "LocalResponseNorm"):
        expected = [row["flops"] for row in summary_rows if row["type"] == layer]
        assert [e.flops for e in forward if e.name == layer] == expected, layer
    conv_flops = [row["flops"] for row in summary_rows if row["type"] == "Conv2d"]
    assert conv_flops[0] == 2 * BATCH * 24 * 28 * 28 * (1 * 5 * 5) + BATCH * 24 * 28 * 28  # the formula, by hand


def test_gemm_backward_flops_are_one_gemm_per_needed_gradient_plus_the_bias(step):
    _, prof, _ = step
    events = prof.events()
    forward_of = {e.sequence_number: e for e in events if e.phase == "forward"}
    for event in events:
        if event.phase != "backward" or event.name not in ("Conv2d", "Linear"):
            continue
        forward = forward_of[event.sequence_number]
        out_elements = math.prod(forward.output_shapes[0])
        gemm = forward.flops - out_elements  # the forward's 2 * multiply-adds, without the bias
        gemms_needed = 1 if event.output_shapes[0] is None else 2  # the first conv's input needs no gradient
        assert event.flops == gemms_needed * gemm + out_elements
    # Backwards run in reverse order: the last Conv2d backward is the first layer's.
    *other_convs, first_conv = [e for e in events if e.name == "Conv2d" and e.phase == "backward"]
    assert first_conv.output_shapes[0] is None and all(e.output_shapes[0] is not None for e in other_convs)


def test_bytes_are_the_inputs_read_plus_the_outputs_written(step):
    _, prof, _ = step
    first_conv = next(e for e in prof.events() if e.name == "Conv2d" and e.phase == "forward")
    elements = sum(math.prod(s) for s in first_conv.input_shapes + first_conv.output_shapes)
    assert first_conv.bytes == 4 * elements  # float32
    flatten = next(e for e in prof.events() if e.name == "Reshape" and e.phase == "forward")
    assert flatten.bytes == 0 and flatten.flops == 0  # a view: nothing moved


def test_operations_under_no_grad_record_forwards_only():
    model = models.alexnet_mnist().eval()
    x, _ = _batch()
    with profiler.profile() as prof, ma.no_grad():
        model(x)
    events = prof.events()
    assert events and all(e.phase == "forward" for e in events)
    assert "Dropout" not in _count(events, "forward")  # the identity in evaluation: no Function runs


# --------------------------------------------------------------------------- the table


def _parse_table(text):
    """(rows as dicts, totals as a dict) from the text of profile.table()."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    assert len(rules) == 2, text
    rows = []
    for line in lines[rules[0] + 1: rules[1]]:
        if line.startswith("..."):
            continue
        name, phase, calls, total, mean, percent, flops, gflops, nbytes, gbytes = line.split()
        rows.append({"name": name, "phase": phase, "calls": int(calls), "total_ms": float(total),
                     "percent": float(percent), "flops": 0 if flops == "-" else int(flops.replace(",", "")),
                     "bytes": int(nbytes.replace(",", ""))})
    label, calls, total, percent, flops, gflops, nbytes, gbytes = lines[rules[1] + 1].split()
    totals = {"label": label, "calls": int(calls), "total_ms": float(total),
              "percent": None if percent == "-" else float(percent),
              "flops": int(flops.replace(",", "")), "bytes": int(nbytes.replace(",", ""))}
    return rows, totals


def test_table_has_a_row_per_op_and_phase_and_a_totals_line_that_sums_them(step):
    _, prof, called = step
    rows, totals = _parse_table(prof.table())
    assert len(rows) == 2 * len(called)  # every op, forward and backward
    assert totals["label"] == "Total" and totals["percent"] == 100.0
    assert totals["calls"] == sum(r["calls"] for r in rows) == 2 * sum(called.values())
    assert totals["flops"] == sum(r["flops"] for r in rows)
    assert totals["bytes"] == sum(r["bytes"] for r in rows)
    # Rounded to 3 decimals: the sum of the rounded rows is within half a microsecond per row.
    assert abs(totals["total_ms"] - sum(r["total_ms"] for r in rows)) <= 0.0005 * len(rows) + 1e-9
    assert abs(sum(r["percent"] for r in rows) - 100) <= 0.05 * len(rows)


def test_table_totals_match_key_averages(step):
    _, prof, _ = step
    averages = prof.key_averages()
    _, totals = _parse_table(prof.table())
    assert totals["calls"] == sum(a.count for a in averages) == len(prof.events())
    assert totals["flops"] == sum(a.flops for a in averages) == sum(e.flops for e in prof.events())
    assert totals["total_ms"] == pytest.approx(sum(a.total_us for a in averages) / 1e3, abs=5e-4)


@pytest.mark.parametrize("sort_by", profiler.SORT_KEYS)
def test_table_is_sorted_by_the_key_asked_for(step, sort_by):
    _, prof, _ = step
    rows, _ = _parse_table(prof.table(sort_by=sort_by))
    if sort_by == "name":
        keys = [(r["name"], r["phase"]) for r in rows]
        assert keys == sorted(keys)
        return
    averages = {(a.name, a.phase): a for a in prof.key_averages()}
    value = {"total_time": lambda a: a.total_us, "mean_time": lambda a: a.mean_us, "count": lambda a: a.count,
             "flops": lambda a: a.flops, "bytes": lambda a: a.bytes}[sort_by]
    values = [value(averages[(r["name"], r["phase"])]) for r in rows]
    assert values == sorted(values, reverse=True)


def test_row_limit_shows_that_many_rows_and_the_totals_still_cover_all(step):
    _, prof, _ = step
    all_rows, all_totals = _parse_table(prof.table())
    text = prof.table(row_limit=3)
    rows, totals = _parse_table(text)
    assert rows == all_rows[:3] and totals == all_totals
    assert f"{len(all_rows) - 3} more row(s) not shown" in text


@pytest.mark.parametrize("bad", ["cpu_time_total", "Total_Time", "", None, 3])
def test_an_unknown_sort_by_raises_value_error_naming_it_and_the_allowed_keys(step, bad):
    _, prof, _ = step
    with pytest.raises(ValueError, match="sort_by") as error:
        prof.table(sort_by=bad)
    assert repr(bad) in str(error.value)
    assert all(key in str(error.value) for key in profiler.SORT_KEYS)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_a_bad_row_limit_raises_value_error(step, bad):
    _, prof, _ = step
    with pytest.raises(ValueError, match=f"row_limit.*{bad!r}"):
        prof.table(row_limit=bad)


# --------------------------------------------------------------------------- the Chrome trace


def _is_before_or_nested(a, b):
    """Two intervals are disjoint or one contains the other (never half-overlapping)."""
    a_start, a_end = a["ts"], a["ts"] + a["dur"]
    b_start, b_end = b["ts"], b["ts"] + b["dur"]
    return a_end <= b_start or b_end <= a_start or (a_start <= b_start and b_end <= a_end) or (
        b_start <= a_start and a_end <= b_end)


def test_chrome_trace_loads_with_json_and_has_complete_events_in_time_order(step, tmp_path):
    _, prof, _ = step
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    assert isinstance(trace["traceEvents"], list)
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["ph"] for e in trace["traceEvents"]} <= {"X", "M"}
    assert len(complete) == len(prof.events())
    for event in complete:
        assert {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"} <= event.keys()
        assert event["cat"] in ("forward", "backward")
        assert event["ts"] >= 0 and event["dur"] >= 0
        assert {"input_shapes", "output_shapes", "dtype", "device", "flops", "bytes"} <= event["args"].keys()
    # Time nests correctly: on one track no two events half-overlap ...
    for i, a in enumerate(complete):
        for b in complete[i + 1:]:
            if (a["pid"], a["tid"]) == (b["pid"], b["tid"]):
                assert _is_before_or_nested(a, b), (a, b)
    # ... and each backward starts after its forward ended.
    forward_end = {e["args"]["sequence_number"]: e["ts"] + e["dur"] for e in complete if e["cat"] == "forward"}
    backwards = [e for e in complete if e["cat"] == "backward"]
    assert backwards
    for event in backwards:
        assert event["ts"] >= forward_end[event["args"]["sequence_number"]]


def test_chrome_trace_is_written_atomically_and_checks_its_path(step, tmp_path):
    _, prof, _ = step
    path = tmp_path / "nested" / "trace.json"
    prof.export_chrome_trace(str(path))
    assert sorted(p.name for p in path.parent.iterdir()) == ["trace.json"]  # no temporary file left behind
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        prof.export_chrome_trace(3)


# --------------------------------------------------------------------------- when it records


def _small_graph():
    a = ma.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    (a * 2.0 + 1.0).sum().backward()


def test_the_profile_records_nothing_after_its_with_block():
    with profiler.profile() as prof:
        _small_graph()
    recorded = prof.events()
    assert recorded
    _small_graph()
    models.alexnet_mnist()(_batch()[0])
    assert prof.events() == recorded
    assert autograd._profiler is None


def test_a_forward_without_profiling_records_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(profiler.profile, "record_forward", lambda *args: calls.append(args))
    monkeypatch.setattr(profiler.profile, "record_backward", lambda *args: calls.append(args))
    assert autograd._profiler is None
    model = models.alexnet_mnist()
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()
    assert calls == []


def test_an_error_inside_the_block_still_stops_recording():
    with pytest.raises(ZeroDivisionError), profiler.profile() as prof:
        _small_graph()
        1 / 0  # noqa: B018 - the error in the block
    assert autograd._profiler is None
    recorded = prof.events()
    assert _count(recorded, "forward") == _count(recorded, "backward") == {"Mul": 1, "Add": 1, "Sum": 1}
    _small_graph()
    assert prof.events() == recorded
    with profiler.profile() as next_profile:  # a new profile may start
        _small_graph()
    assert [(e.name, e.phase) for e in next_profile.events()] == [(e.name, e.phase) for e in recorded]


def test_an_error_in_a_profiled_op_propagates_and_is_not_recorded():
    with profiler.profile() as prof:
        with pytest.raises(ValueError, match="matmul"):
            ma.tensor(np.ones((2, 3), np.float32)) @ ma.tensor(np.ones((2, 3), np.float32))
        F.relu(ma.tensor([1.0, -1.0]))
    assert [e.name for e in prof.events()] == ["ReLU"]


def test_profiles_do_not_nest_and_the_outer_one_keeps_recording():
    with profiler.profile() as outer:
        with pytest.raises(RuntimeError, match="profiles do not nest"):
            with profiler.profile():
                pass
        _small_graph()
    assert _count(outer.events(), "forward") == {"Mul": 1, "Add": 1, "Sum": 1}
    assert autograd._profiler is None


def test_a_profile_records_once():
    prof = profiler.profile()
    with prof:
        pass
    with pytest.raises(RuntimeError, match="already recorded"):
        with prof:
            pass


def test_results_are_refused_until_the_block_ends():
    prof = profiler.profile()
    with pytest.raises(RuntimeError, match="before it has recorded"):
        prof.events()
    with prof:
        with pytest.raises(RuntimeError, match="inside its `with` block"):
            prof.table()
    assert prof.events() == []
    _, totals = _parse_table(prof.table())
    assert totals["calls"] == 0


def test_only_the_thread_that_entered_the_profile_is_recorded():
    started, finished = threading.Event(), threading.Event()
    results = {}

    def other_thread():
        started.wait()
        a = ma.tensor(np.full(3, 2.0, np.float32), requires_grad=True)
        (a * a).sum().backward()
        results["grad"] = a.grad.numpy()
        finished.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with profiler.profile() as prof:
        started.set()
        assert finished.wait(timeout=60)
        F.relu(ma.tensor([1.0, -1.0]))
    worker.join()
    np.testing.assert_array_equal(results["grad"], [4.0, 4.0, 4.0])  # the other thread's ops ran as usual
    assert [e.name for e in prof.events()] == ["ReLU"]
    assert {e.thread_id for e in prof.events()} == {threading.get_native_id()}


# --------------------------------------------------------------------------- laws on random shapes

_dims = st.integers(min_value=1, max_value=6)


@settings(max_examples=40, deadline=None)
@given(m=_dims, k=_dims, n=_dims, a_needs=st.booleans())
def test_matmul_flops_and_bytes_follow_the_convention(m, k, n, a_needs):
    a = ma.tensor(np.ones((m, k), np.float32), requires_grad=a_needs)
    b = ma.tensor(np.ones((k, n), np.float32), requires_grad=True)
    with profiler.profile() as prof:
        (a @ b).backward(np.ones((m, n), np.float32))
    forward, backward = prof.events()
    assert (forward.name, forward.phase, backward.phase) == ("MatMul", "forward", "backward")
    assert forward.flops == 2 * m * k * n  # a multiply-add is 2 FLOPs
    assert backward.flops == (2 if a_needs else 1) * forward.flops  # one GEMM per gradient needed
    assert forward.bytes == 4 * (m * k + k * n + m * n)
    assert backward.bytes == 4 * (m * n + (m * k if a_needs else 0) + k * n)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(_dims, min_size=1, max_size=3), broadcast=st.booleans(),
       operation=st.sampled_from(["add", "sub", "mul", "div"]))
def test_elementwise_forward_is_one_flop_per_output_and_reads_the_stored_elements(shape, broadcast, operation):
    a = ma.tensor(np.ones(shape, np.float32))
    b_shape = (1,) * len(shape) if broadcast else tuple(shape)
    b = ma.tensor(np.full(b_shape, 2.0, np.float32))
    with profiler.profile() as prof:
        getattr(F, operation)(a, b)
    (event,) = prof.events()
    elements = math.prod(shape)
    assert event.name == operation.capitalize() and event.flops == elements
    assert event.bytes == 4 * (elements + math.prod(b_shape) + elements)


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4))
def test_the_count_of_each_op_is_the_number_of_calls(counts):
    operations = [F.relu, F.exp, F.neg, lambda t: t.sum()]
    x = ma.tensor(np.linspace(-1, 1, 6, dtype=np.float32))
    with profiler.profile() as prof:
        for operation, count in zip(operations, counts):
            for _ in range(count):
                operation(x)
    names = ["ReLU", "Exp", "Neg", "Sum"]
    assert _count(prof.events(), "forward") == {name: c for name, c in zip(names, counts)}
    rows, totals = _parse_table(prof.table(sort_by="count"))
    assert [r["calls"] for r in rows] == sorted(counts, reverse=True)
    assert totals["calls"] == sum(counts)


def test_a_function_outside_the_flops_table_has_unknown_flops_shown_as_a_dash():
    class Square(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, grad_output):
            return 2 * self.x * grad_output

    x = ma.tensor(np.ones(4, np.float32), requires_grad=True)
    with profiler.profile() as prof:
        Square()(x).sum().backward()
    square = [e for e in prof.events() if e.name == "Square"]
    assert [e.phase for e in square] == ["forward", "backward"] and all(e.flops is None for e in square)
    assert square[0].bytes == 4 * (4 + 4)
    line = next(line for line in prof.table().splitlines() if line.startswith("Square"))
    assert line.split()[6] == "-"


def test_nn_layers_and_functional_calls_are_recorded_alike():
    x = ma.tensor(np.ones((2, 3), np.float32))
    layer = nn.Linear(3, 4)
    with profiler.profile() as prof:
        layer(x)
        F.linear(x, layer.weight, layer.bias)
    first, second = prof.events()
    assert first.name == second.name == "Linear"
    assert first.flops == second.flops == 2 * 2 * 3 * 4 + 2 * 4


# --------------------------------------------------------------------------- GPU


class _FakeCudaEvent:
    """Stands in for cupy.cuda.Event: remembers when it was recorded (host clock)."""

    def record(self):
        self.recorded_ns = time.perf_counter_ns()

    def synchronize(self):
        pass


def test_the_gpu_path_reads_its_cuda_events_only_when_the_profile_ends(monkeypatch, tmp_path):
    """The CUDA-event bookkeeping, checked anywhere with stand-in events (the real GPU test is below)."""
    queries = []

    def get_elapsed_time(start, end):
        queries.append(recording[0])
        return (end.recorded_ns - start.recorded_ns) / 1e6  # milliseconds, as CuPy's

    fake_cupy = type("cupy", (), {"cuda": type("cuda", (), {
        "Event": _FakeCudaEvent, "get_elapsed_time": staticmethod(get_elapsed_time)})})
    real_backend = profiler.backend
    fake_backend = type("backend", (), {
        "device_of": staticmethod(lambda array: "cuda:0"),
        "cupy_module": staticmethod(lambda: fake_cupy),
        "get_array_module": staticmethod(real_backend.get_array_module),
    })
    monkeypatch.setattr(profiler, "backend", fake_backend)
    recording = [True]
    with profiler.profile() as prof:
        _small_graph()
        recording[0] = False
    assert queries and not any(queries)  # no per-op wait for the GPU: every time is read at the end
    events = prof.events()
    assert {(e.device, e.timed_by) for e in events} == {("cuda:0", "cuda events")}
    assert all(e.start_us >= 0 and e.duration_us >= 0 for e in events)
    assert [e.start_us for e in events] == sorted(e.start_us for e in events)  # the GPU's timeline keeps the order
    forward_end = {e.sequence_number: e.end_us for e in events if e.phase == "forward"}
    assert all(e.start_us >= forward_end[e.sequence_number] for e in events if e.phase == "backward")
    prof.export_chrome_trace(tmp_path / "trace.json")
    trace = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert {(e["pid"], e["tid"]) for e in trace if e["ph"] == "X"} == {(0, 0)}  # GPU 0's own track




@pytest.mark.gpu
@pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device")
def test_gpu_ops_are_timed_with_cuda_events(tmp_path):
    ma.manual_seed(0)
    model = models.alexnet_mnist().to("cuda")
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch("cuda")
    _training_step(model, optimizer, x, y)
    with profiler.profile() as prof:
        _training_step(model, optimizer, x, y)
    events = prof.events()
    assert _count(events, "forward") == _count(events, "backward")
    assert {e.device for e in events} == {"cuda:0"} and {e.timed_by for e in events} == {"cuda events"}
    assert all(e.duration_us >= 0 and e.start_us >= 0 for e in events)
    assert sum(e.duration_us for e in events if e.name == "Conv2d") > 0
    forward_end = {e.sequence_number: e.end_us for e in events if e.phase == "forward"}
    for event in events:
        if event.phase == "backward":
            assert event.start_us >= forward_end[event.sequence_number] - 1e-3  # on the GPU's timeline
    path = tmp_path / "gpu-trace.json"
    prof.export_chrome_trace(path)
    complete = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {(e["pid"], e["tid"]) for e in complete} == {(0, 0)}  # the GPU's own track
    print(prof.table(row_limit=8))
