"""The op profiler: how long each autograd Function takes, and how much work it does.

    import minialex.profiler

    with minialex.profiler.profile() as prof:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    print(prof.table(sort_by="total_time", row_limit=10))
    prof.export_chrome_trace("trace.json")  # open in https://ui.perfetto.dev or chrome://tracing

What is recorded. While a profile records, every call of a Function (the
classes in ``functional.py``: ``Function.__call__`` in ``autograd.py``) and
every backward of one in the graph walk (``run_backward``) is handed to it:
one ``FunctionEvent`` per call, with the op's name (its class: Conv2d,
ReLU, ...), the phase (forward or backward), the shapes of its input and
output arrays (for a backward: the gradient that comes in and the gradients
that go out, None where an input needs none), dtype, device, start and
duration, FLOPs and bytes. A forward and its backward share a
``sequence_number``. The engine's own work between Functions (summing
broadcast gradients, accumulating ``.grad``), the optimiser step and data
loading are in no row.

How it is timed. On the CPU, ``time.perf_counter_ns`` around the call. A GPU
runs kernels asynchronously: a host clock would time only their launches. So
on a GPU a pair of CUDA events is recorded on the current stream around the
call, and the time between them is read when the profile ends: one wait for
the GPU at the end, none per op, so profiling does not change how the GPU is
driven. (CuPy comes from ``backend.cupy_module()``, as everywhere.) GPU
events are placed on the GPU's own timeline, which starts at a reference
event recorded with the first GPU op.

FLOPs, defined in one table (``_FLOPS`` below) with the convention of
``models/summary.py``: a multiply-add is 2 FLOPs, every other arithmetic
operation (add, compare, exp, ...) 1. Forward, per call::

    Conv2d       2 * out_elements * (C/groups * kh * kw)  (+ out_elements with bias)
    Linear       2 * out_elements * in_features           (+ out_elements with bias)
    MatMul       2 * out_elements * k                     (k: the summed dimension)
    ReLU, Dropout, elementwise (Add, Sub, Mul, Div, Neg, Pow, Exp, Log)
                 out_elements
    MaxPool2d    out_elements * (kh * kw - 1) comparisons
    LRN          out_elements * (size + 5): square, window sum, scale, power, product
    Softmax, LogSoftmax   5 * elements: max, subtract, exp, sum, divide (or subtract)
    CrossEntropy 5 * N * C (log-softmax) + N (pick the targets, mean)
    Sum, Max     input_elements; Mean input_elements + out_elements
    Reshape, Transpose, GetItem, Cast, ToDevice   0 (they move data, no arithmetic)

Backward: a GEMM-based layer (Conv2d, Linear, MatMul) does one GEMM of the
forward's size for each of input and weight whose gradient is needed: 2x the
forward's multiply-adds when both are (the usual case), 1x when only one is
(a first layer, whose input needs no gradient), plus out_elements for the
bias gradient. The others: ReLU, Dropout, Neg, Exp, Log, MaxPool2d (the
scatter), Mean, GetItem out_elements; Mul out_elements per input gradient;
Sub out_elements if b needs one (the negation); Div out_elements for a and
4 * out_elements for b; Pow 3 * out_elements; LRN out_elements * (size + 5);
Softmax, LogSoftmax 4 * elements; CrossEntropy 2 * N * C + N; Max
4 * input_elements; Add, Sum and the shape ops 0. A Function not in the table
(one of your own) has FLOPs None, shown as "-".

Bytes: the arrays handed to the call plus the arrays it returns, each counted
once (for a backward: the incoming gradient and the input gradients). An
output that is a view of an input (reshape, transpose, a gradient passed
straight through) moves nothing, and a broadcast array counts its stored
elements only. A lower bound: what a kernel reads from its saved values (a
convolution's columns) and its temporaries are not counted.

Threads: a profile records the thread that entered it. Functions that other
threads call meanwhile run as usual and are not recorded (the engine's grad
mode is per thread too). Nesting: one profile records at a time; entering a
second one while one records, in any thread, raises RuntimeError.

Cost when not profiling: ``autograd._profiler`` is None, and the engine's hot
path reads it once per Function call and once per backward.
"""

import json
import math
import numbers
import os
import threading
import time
from dataclasses import dataclass

from . import autograd, backend
from . import functional as F
from .io import atomic_write

SORT_KEYS = ("total_time", "mean_time", "count", "flops", "bytes", "name")

# Entering a profile checks and then claims autograd._profiler: two threads
# entering at once must not both see it free.
_claim_lock = threading.Lock()


# --------------------------------------------------------------------------- FLOPs table


def _elements(shape):
    return math.prod(shape)


@dataclass(frozen=True)
class _Call:
    """What a FLOPs formula may look at: the shapes of one call.

    ``inputs``: the forward's input shapes (also for a backward), ``output``:
    the forward's output shape (= the incoming gradient's, for a backward),
    ``options``: the forward's keyword options (None for a backward whose
    forward ran before the profile began), ``needs``: which inputs want a gradient.
    """

    inputs: tuple
    output: tuple
    options: dict | None
    needs: tuple


def _zero(call):
    return 0


def _per_output(factor):
    return lambda call: factor * _elements(call.output)


def _per_input(factor):
    return lambda call: factor * _elements(call.inputs[0])


def _per_input_gradient(factor):
    return lambda call: factor * _elements(call.output) * sum(call.needs)


def _conv2d_multiply_adds(call):
    _, channels_per_group, kh, kw = call.inputs[1]  # the weight (O, C/groups, kh, kw)
    return _elements(call.output) * channels_per_group * kh * kw


def _linear_multiply_adds(call):
    return _elements(call.output) * call.inputs[1][1]  # the weight (out, in)


def _matmul_multiply_adds(call):
    return _elements(call.output) * call.inputs[0][-1]  # a's last dimension is summed


def _gemm_forward(multiply_adds):
    def flops(call):
        bias = _elements(call.output) if len(call.inputs) > 2 else 0
        return 2 * multiply_adds(call) + bias

    return flops


def _gemm_backward(multiply_adds):
    def flops(call):
        gemms = int(call.needs[0]) + int(call.needs[1])  # one for the input's gradient, one for the weight's
        bias = _elements(call.output) if len(call.needs) > 2 and call.needs[2] else 0
        return 2 * multiply_adds(call) * gemms + bias

    return flops


def _max_pool_forward(call):
    if call.options is None:
        return None
    kh, kw = call.options["kernel_size"]
    return _elements(call.output) * (kh * kw - 1)


def _local_response_norm(call):
    if call.options is None:
        return None
    return _elements(call.output) * (call.options["size"] + 5)


def _cross_entropy(per_logit):
    def flops(call):
        rows = call.inputs[0][0]
        return per_logit * _elements(call.inputs[0]) + rows

    return flops


def _sub_backward(call):
    return _elements(call.output) if call.needs[1] else 0  # a's gradient is passed through


def _div_backward(call):
    # a: grad / b; b: -grad * a / (b * b)
    return _elements(call.output) * (int(call.needs[0]) + 4 * int(call.needs[1]))


def _mean_forward(call):
    return _elements(call.inputs[0]) + _elements(call.output)


# Function class -> (forward FLOPs, backward FLOPs), each a formula of a _Call.
_FLOPS = {
    F.Conv2d: (_gemm_forward(_conv2d_multiply_adds), _gemm_backward(_conv2d_multiply_adds)),
    F.Linear: (_gemm_forward(_linear_multiply_adds), _gemm_backward(_linear_multiply_adds)),
    F.MatMul: (_gemm_forward(_matmul_multiply_adds), _gemm_backward(_matmul_multiply_adds)),
    F.ReLU: (_per_output(1), _per_output(1)),
    F.MaxPool2d: (_max_pool_forward, _per_output(1)),
    F.LocalResponseNorm: (_local_response_norm, _local_response_norm),
    F.Dropout: (_per_output(1), _per_output(1)),
    F.Softmax: (_per_output(5), _per_output(4)),
    F.LogSoftmax: (_per_output(5), _per_output(4)),
    F.CrossEntropy: (_cross_entropy(5), _cross_entropy(2)),
    F.Add: (_per_output(1), _zero),
    F.Sub: (_per_output(1), _sub_backward),
    F.Mul: (_per_output(1), _per_input_gradient(1)),
    F.Div: (_per_output(1), _div_backward),
    F.Neg: (_per_output(1), _per_output(1)),
    F.Pow: (_per_output(1), _per_output(3)),
    F.Exp: (_per_output(1), _per_output(1)),
    F.Log: (_per_output(1), _per_output(1)),
    F.Sum: (_per_input(1), _zero),
    F.Mean: (_mean_forward, _per_output(1)),
    F.Max: (_per_input(1), _per_input(4)),
    F.Reshape: (_zero, _zero),
    F.Transpose: (_zero, _zero),
    F.GetItem: (_zero, _per_output(1)),
    F.Cast: (_zero, _zero),
    F.ToDevice: (_zero, _zero),
}


def _flops(function, phase, call):
    formulas = _FLOPS.get(type(function))
    if formulas is None:
        return None
    return formulas[0 if phase == "forward" else 1](call)


# --------------------------------------------------------------------------- bytes


def _stored_bytes(array):
    """Bytes of the distinct elements: a broadcast axis (stride 0) is stored once."""
    strides = getattr(array, "strides", None) or ()
    elements = math.prod(n for n, stride in zip(array.shape, strides) if stride != 0)
    return elements * array.dtype.itemsize


def _input_viewed_by(output, inputs):
    """The position of the input that ``output`` is (a view of), or None."""
    for position, array in enumerate(inputs):
        if output is array:
            return position
    if getattr(output, "base", None) is None:
        return None
    xp = backend.get_array_module(output)
    for position, array in enumerate(inputs):
        if xp.may_share_memory(output, array):
            return position
    return None


def _bytes_moved(inputs, outputs):
    """Bytes read from ``inputs`` plus bytes written to ``outputs`` (None entries skipped).

    An output that views an input moved nothing: neither is counted.
    """
    viewed = set()
    written = 0
    for output in outputs:
        if output is None:
            continue
        source = _input_viewed_by(output, inputs)
        if source is None:
            written += _stored_bytes(output)
        else:
            viewed.add(source)
    read = sum(_stored_bytes(array) for position, array in enumerate(inputs) if position not in viewed)
    return read + written


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class FunctionEvent:
    """One recorded call of a Function's forward or backward.

    Times are in microseconds since the profile began. ``flops`` is None for
    a Function that the FLOPs table does not know; ``bytes`` is a lower bound
    (see the module's docstring). ``sequence_number`` is shared by a forward
    and its backward (None for a backward whose forward ran before the profile).
    ``timed_by`` is "host clock" or "cuda events".
    """

    name: str
    phase: str
    input_shapes: tuple
    output_shapes: tuple
    dtype: str
    device: str
    start_us: float
    duration_us: float
    flops: int | None
    bytes: int
    sequence_number: int | None
    thread_id: int
    timed_by: str

    @property
    def end_us(self):
        return self.start_us + self.duration_us


@dataclass(frozen=True)
class EventAverage:
    """The calls of one op in one phase, added up: a row of ``profile.table()``.

    ``flops`` is None when the FLOPs of any of the calls are unknown.
    """

    name: str
    phase: str
    count: int
    total_us: float
    flops: int | None
    bytes: int

    @property
    def mean_us(self):
        return self.total_us / self.count

    @property
    def gflops_per_second(self):
        """Achieved GFLOP/s (None if the FLOPs are unknown or no time was measured)."""
        return _rate(self.flops, self.total_us)

    @property
    def gbytes_per_second(self):
        return _rate(self.bytes, self.total_us)


def _rate(amount, microseconds):
    """amount per second, in billions (None when either is unknown or zero time)."""
    if amount is None or microseconds <= 0:
        return None
    return amount / microseconds / 1e3


# --------------------------------------------------------------------------- the profile


class profile:  # noqa: N801 - PyTorch's name
    """Record every Function's forward and backward inside a ``with`` block.

        with minialex.profiler.profile() as prof:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        print(prof.table())

    After the block: ``events()`` (one FunctionEvent per call),
    ``key_averages()`` (one EventAverage per op and phase), ``table()`` and
    ``export_chrome_trace(path)``. A profile object records once; one
    profile records at a time (nesting raises RuntimeError).
    """

    def __init__(self):
        self._state = "new"  # then "recording", then "done"
        self._records = []  # one tuple per call while recording; FunctionEvents after
        self._events = None

    # ----------------------------------------------------------------- recording

    def __enter__(self):
        if self._state != "new":
            raise RuntimeError("profile: this profile has already recorded; make a new profile() to record again")
        with _claim_lock:
            if autograd._profiler is not None:
                raise RuntimeError(
                    "profile: another profile is already recording (an enclosing `with profile()`, or one "
                    "in another thread); profiles do not nest: end that one first"
                )
            self._thread = threading.get_ident()
            self._thread_id = threading.get_native_id()  # the OS's id, as trace viewers show it
            self._next_sequence_number = 0
            self._gpu_clocks = {}  # device -> (reference CUDA event, host time when it was recorded)
            self._start_ns = time.perf_counter_ns()
            self._state = "recording"
            autograd._profiler = self
        return self

    def __exit__(self, *exc_info):
        # Stop first: whatever happens below (or already went wrong in the block), nothing more is recorded.
        autograd._profiler = None
        self._state = "done"
        self._events = self._make_events()
        self._records = []
        self._gpu_clocks = {}
        return False  # an exception from the block goes on

    def _is_recording_this_thread(self):
        return self._state == "recording" and threading.get_ident() == self._thread

    def _mark(self, device):
        """A point in time: the host clock on the CPU, a recorded CUDA event on a GPU."""
        if device == "cpu":
            return time.perf_counter_ns()
        cupy = backend.cupy_module()
        if device not in self._gpu_clocks:
            reference = cupy.cuda.Event()
            reference.record()
            self._gpu_clocks[device] = (reference, time.perf_counter_ns())
        event = cupy.cuda.Event()
        event.record()
        return event

    def record_forward(self, function, arrays, options):
        """Run ``function.forward(*arrays, **options)``, timed and recorded (called by Function.__call__)."""
        if not self._is_recording_this_thread():
            return function.forward(*arrays, **options)
        device = backend.device_of(arrays[0])
        start = self._mark(device)
        output = function.forward(*arrays, **options)
        end = self._mark(device)
        sequence_number = self._next_sequence_number
        self._next_sequence_number += 1
        # The backward needs these; they go when the graph is freed (Function._release).
        function._profiler_sequence_number = sequence_number
        function._profiler_options = options
        call = _Call(tuple(tuple(a.shape) for a in arrays), tuple(output.shape), options, function.needs_input_grad)
        self._records.append((
            type(function).__name__, "forward", call.inputs, (call.output,), str(output.dtype), device,
            start, end, _flops(function, "forward", call), _bytes_moved(arrays, [output]), sequence_number,
        ))
        return output

    def record_backward(self, function, grad_output):
        """Run ``function.backward(grad_output)``, timed and recorded (called by the backward walk)."""
        if not self._is_recording_this_thread():
            return function.backward(grad_output)
        device = backend.device_of(grad_output)
        start = self._mark(device)
        grads = function.backward(grad_output)
        end = self._mark(device)
        returned = grads if isinstance(grads, tuple) else (grads,)
        call = _Call(
            tuple(t.shape for t in function.inputs),
            tuple(grad_output.shape),
            function.__dict__.get("_profiler_options"),
            function.needs_input_grad,
        )
        output_shapes = tuple(None if g is None else tuple(g.shape) for g in returned)
        self._records.append((
            type(function).__name__, "backward", (call.output,), output_shapes, str(grad_output.dtype), device,
            start, end, _flops(function, "backward", call), _bytes_moved([grad_output], returned),
            function.__dict__.get("_profiler_sequence_number"),
        ))
        return grads

    def _make_events(self):
        """Turn the raw records into FunctionEvents (reading the CUDA events' times: one wait for the GPU)."""
        events = []
        cupy = backend.cupy_module() if self._gpu_clocks else None
        for record in self._records:
            name, phase, input_shapes, output_shapes, dtype, device, start, end, flops, nbytes, sequence = record
            if device == "cpu":
                start_us = (start - self._start_ns) / 1e3
                duration_us = (end - start) / 1e3
                timed_by = "host clock"
            else:
                reference, reference_ns = self._gpu_clocks[device]
                end.synchronize()
                start_us = (reference_ns - self._start_ns) / 1e3 + cupy.cuda.get_elapsed_time(reference, start) * 1e3
                duration_us = cupy.cuda.get_elapsed_time(start, end) * 1e3
                timed_by = "cuda events"
            events.append(FunctionEvent(
                name, phase, input_shapes, output_shapes, dtype, device, start_us, duration_us,
                flops, nbytes, sequence, self._thread_id, timed_by,
            ))
        return events

    # ----------------------------------------------------------------- results

    def _check_done(self, method):
        if self._state != "done":
            where = "inside its `with` block" if self._state == "recording" else "before it has recorded"
            raise RuntimeError(
                f"profile.{method}() was called {where}; the results are ready after "
                "`with minialex.profiler.profile() as prof: ...` ends"
            )

    def events(self):
        """Every recorded call, in the order they ran: a list of FunctionEvent."""
        self._check_done("events")
        return list(self._events)

    def key_averages(self):
        """One EventAverage per (op name, phase), in the order each first ran (as PyTorch's)."""
        self._check_done("key_averages")
        groups = {}
        for event in self._events:
            groups.setdefault((event.name, event.phase), []).append(event)
        averages = []
        for (name, phase), events in groups.items():
            flops = [e.flops for e in events]
            averages.append(EventAverage(
                name, phase, len(events), sum(e.duration_us for e in events),
                None if None in flops else sum(flops), sum(e.bytes for e in events),
            ))
        return averages

    def table(self, sort_by="total_time", row_limit=None):
        """The per-op table as text: one row per (op, phase), then a totals line.

        ``sort_by``: "total_time" (default), "mean_time", "count", "flops",
        "bytes" (largest first) or "name" (A to Z). ``row_limit``: show only
        the first N rows (None: all); the totals always cover every row.
        Columns: calls, total and mean milliseconds, % of the total time,
        FLOPs, achieved GFLOP/s, bytes (a lower bound) and GB/s. The totals
        line adds up each column ("-" counts as 0); its rates are its FLOPs
        and bytes over its time.
        """
        self._check_done("table")
        if sort_by not in SORT_KEYS:
            raise ValueError(f"table: sort_by must be one of {', '.join(map(repr, SORT_KEYS))}; got {sort_by!r}")
        if row_limit is not None and (
            isinstance(row_limit, bool) or not isinstance(row_limit, numbers.Integral) or row_limit < 1
        ):
            raise ValueError(f"table: row_limit must be a positive int or None, got {row_limit!r}")
        rows = self.key_averages()
        if sort_by == "name":
            rows.sort(key=lambda row: (row.name, row.phase))
        else:
            value = {
                "total_time": lambda row: row.total_us,
                "mean_time": lambda row: row.mean_us,
                "count": lambda row: row.count,
                "flops": lambda row: -1 if row.flops is None else row.flops,
                "bytes": lambda row: row.bytes,
            }[sort_by]
            rows.sort(key=value, reverse=True)  # a stable sort: ties keep the order the ops first ran

        total_us = sum(row.total_us for row in rows)
        total_flops = sum(row.flops for row in rows if row.flops is not None)
        total_bytes = sum(row.bytes for row in rows)

        def optional(value, form):
            return "-" if value is None else format(value, form)

        def percent(microseconds):
            return f"{100 * microseconds / total_us:.1f}" if total_us > 0 else "-"

        header = ("Op", "Phase", "Calls", "Total ms", "Mean ms", "% time", "FLOPs", "GFLOP/s", "Bytes", "GB/s")
        shown = rows if row_limit is None else rows[:row_limit]
        body = [
            (row.name, row.phase, str(row.count), f"{row.total_us / 1e3:.3f}", f"{row.mean_us / 1e3:.3f}",
             percent(row.total_us), optional(row.flops, ","), optional(row.gflops_per_second, ".2f"),
             f"{row.bytes:,}", optional(row.gbytes_per_second, ".2f"))
            for row in shown
        ]
        totals = ("Total", "", str(sum(row.count for row in rows)), f"{total_us / 1e3:.3f}", "",
                  percent(total_us), f"{total_flops:,}", optional(_rate(total_flops, total_us), ".2f"),
                  f"{total_bytes:,}", optional(_rate(total_bytes, total_us), ".2f"))
        widths = [max(len(line[i]) for line in [header, *body, totals]) for i in range(len(header))]

        def format_line(line):
            return "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))
            )

        rule = "-" * len(format_line(header))
        lines = [format_line(header), rule, *(format_line(line) for line in body)]
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more row(s) not shown; the totals include them")
        lines += [rule, format_line(totals)]
        return "\n".join(lines)

    def export_chrome_trace(self, path):
        """Write the events as Chrome/Perfetto trace JSON (open it in ui.perfetto.dev or chrome://tracing).

        A top-level ``traceEvents`` list of complete events ("ph": "X", "ts"
        and "dur" in microseconds), category "forward" or "backward", with
        shapes, dtype, device, FLOPs and bytes in "args"; plus "M" events
        naming the tracks. Host-timed ops sit on the recording thread's
        track; GPU-timed ops on a track of their own per GPU (their times
        come from the GPU's clock). Written atomically: a reader never sees
        half a file.
        """
        self._check_done("export_chrome_trace")
        try:
            path = os.fspath(path)
        except TypeError:
            raise TypeError(
                f"export_chrome_trace: path must be a str or os.PathLike, got {type(path).__name__}"
            ) from None
        process = os.getpid()
        tracks = {}  # (pid, tid) -> the track's name

        def track_of(event):
            if event.timed_by == "host clock":
                key = (process, event.thread_id)
                tracks.setdefault(key, ("minialex", f"thread {event.thread_id}"))
            else:  # as PyTorch's traces: a GPU is a process of its own, numbered by its index
                index = int(event.device.split(":")[1])
                key = (index, 0)
                tracks.setdefault(key, (f"GPU {event.device}", "current stream (CUDA events)"))
            return key

        trace_events = []
        for event in self._events:
            pid, tid = track_of(event)
            trace_events.append({
                "name": event.name, "cat": event.phase, "ph": "X",
                "ts": round(event.start_us, 3), "dur": round(event.duration_us, 3), "pid": pid, "tid": tid,
                "args": {
                    "input_shapes": [None if s is None else list(s) for s in event.input_shapes],
                    "output_shapes": [None if s is None else list(s) for s in event.output_shapes],
                    "dtype": event.dtype, "device": event.device, "flops": event.flops, "bytes": event.bytes,
                    "sequence_number": event.sequence_number, "timed_by": event.timed_by,
                },
            })
        for (pid, tid), (process_name, thread_name) in tracks.items():
            trace_events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": tid,
                                 "args": {"name": process_name}})
            trace_events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                                 "args": {"name": thread_name}})
        with atomic_write(path, "w") as file:
            json.dump({"traceEvents": trace_events, "displayTimeUnit": "ms"}, file)
