"""Draw the figures of the documentation into docs/figures/*.png.

    python docs/make_figures.py            # from the repository root; needs matplotlib

Every figure that shows numbers gets them from minialex's own kernels (the
im2col columns, the pooling gradient, the LRN curves, the SGD trajectories,
the order of the backward walk), so a picture shows what the code does. The
benchmark plots of the CPU and GPU page are drawn by ``benchmarks.plots`` from
the committed results files (the same pictures ``python -m benchmarks.plots``
writes beside them), each named after the file it comes from.

    python docs/make_figures.py benchmarks  # the benchmark plots alone
    python docs/make_figures.py look-inside # the profiler trace, a graph (needs Graphviz's dot), and
                                            # conv1's filters after one epoch of MNIST (a few minutes)
"""

import json
import os
import shutil
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import minialex as ma  # noqa: E402
from minialex import optim  # noqa: E402
from minialex.autograd import _topological_order  # noqa: E402
from minialex.kernels import activation, conv, dropout, lrn, pool, softmax_xent  # noqa: E402

FIGURES = os.path.join(ROOT, "docs", "figures")
DPI = 100
BLUE, ORANGE, GREEN, GREY = "#4c72b0", "#dd8452", "#55a868", "#bbbbbb"


def copy_figure(source, name):
    """Put a picture that minialex drew itself (``minialex.viz``, ``train_mnist.py --plots``) into the figures."""
    path = os.path.join(FIGURES, name)
    shutil.copyfile(source, path)
    print("wrote", os.path.relpath(path, ROOT))


def save(figure, name):
    path = os.path.join(FIGURES, name)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    print("wrote", os.path.relpath(path, ROOT))


def grid(ax, values, labels, highlight=None, color=ORANGE, title=None):
    """Draw a matrix of labelled cells; ``highlight`` is a boolean mask of cells to colour."""
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            face = color if highlight is not None and highlight[r, c] else "white"
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, facecolor=face, edgecolor="black", lw=0.6))
            ax.text(c + 0.5, rows - 0.5 - r, labels[r][c], ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.1, cols + 0.1)
    ax.set_ylim(-0.1, rows + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


# --------------------------------------------------------------------------- im2col


def figure_im2col():
    """Two 4x4 channels, 2x2 kernel, stride 1: col is (C*kh*kw, N*oh*ow) = (8, 9)."""
    C, H, W, k = 2, 4, 4, 2
    ids = np.arange(C * H * W, dtype=np.float64).reshape(1, C, H, W)  # value = pixel id
    col = conv.im2col(ids, k, k, (1, 1), (0, 0))
    names = "ab"

    def label(pixel_id):
        pixel_id = int(pixel_id)
        return f"{names[pixel_id // (H * W)]}{pixel_id % (H * W)}"

    y, x = 1, 2  # the output position whose window is highlighted
    column = y * 3 + x
    figure = plt.figure(figsize=(9.5, 3.2))
    for c in range(C):
        ax = figure.add_axes([0.01 + 0.17 * c, 0.15, 0.16, 0.7])
        mask = np.zeros((H, W), bool)
        mask[y:y + k, x:x + k] = True
        grid(ax, ids[0, c], [[label(v) for v in row] for row in ids[0, c]], mask,
             title=f"x[0, {c}] (channel {names[c]})")
    ax = figure.add_axes([0.38, 0.05, 0.6, 0.85])
    mask = np.zeros(col.shape, bool)
    mask[:, column] = True
    grid(ax, col, [[label(v) for v in row] for row in col], mask,
         title=f"col = im2col(x, 2, 2): shape {col.shape} = (C*kh*kw, N*oh*ow)")
    for r in range(col.shape[0]):
        c, rest = divmod(r, k * k)
        i, j = divmod(rest, k)
        ax.text(-0.15, col.shape[0] - 0.5 - r, f"({names[c]},{i},{j})", ha="right", va="center", fontsize=7)
    for q in range(col.shape[1]):
        ax.text(q + 0.5, -0.35, f"({q // 3},{q % 3})", ha="center", va="top", fontsize=7)
    ax.text(-0.15, -0.35, "(y,x):", ha="right", va="top", fontsize=7)
    ax.set_xlim(-1.6, col.shape[1] + 0.1)
    ax.set_ylim(-0.9, col.shape[0] + 0.1)
    figure.text(0.01, -0.06, f"The 2x2 window of output (y, x) = ({y}, {x}) in both channels is column {column} of col; "
                "rows are ordered (channel, i, j), columns (n, y, x).", ha="left", fontsize=8)
    save(figure, "im2col.png")


def figure_groups():
    """groups=2 as a block-diagonal weight matrix: one GEMM per group."""
    O, C, kk = 4, 4, 2  # 4 filters, 4 channels, kh*kw drawn as 2 for space
    figure, ax = plt.subplots(figsize=(8, 2.8))
    ax.axis("off")
    rows_w, cols_w = O, C * kk
    colors = [BLUE, ORANGE]

    def block(x0, y0, w, h, face, text=None):
        ax.add_patch(Rectangle((x0, y0), w, h, facecolor=face, edgecolor="black", lw=0.8))
        if text:
            ax.text(x0 + w / 2, y0 + h / 2, text, ha="center", va="center", fontsize=8)

    # weight (O, C*kh*kw) with groups=2: only the diagonal blocks exist
    for g in range(2):
        block(0 + g * cols_w / 2, rows_w / 2 * (1 - g), cols_w / 2, rows_w / 2, colors[g], f"W{g}\n(O/G, C/G·kh·kw)")
        block(0 + (1 - g) * cols_w / 2, rows_w / 2 * (1 - g), cols_w / 2, rows_w / 2, "white", "0")
    ax.text(cols_w / 2, rows_w + 0.3, "weight as (O, C·kh·kw)", ha="center", fontsize=9)
    ax.text(cols_w + 0.6, rows_w / 2, "@", ha="center", va="center", fontsize=14)
    # col (C*kh*kw, N*oh*ow): row blocks per group
    x0 = cols_w + 1.2
    for g in range(2):
        block(x0, rows_w / 2 * (1 - g), 6, rows_w / 2, colors[g], f"col rows of group {g}\n(C/G·kh·kw, N·oh·ow)")
    ax.text(x0 + 3, rows_w + 0.3, "col", ha="center", fontsize=9)
    ax.text(x0 + 6.6, rows_w / 2, "=", ha="center", va="center", fontsize=14)
    x1 = x0 + 7.2
    for g in range(2):
        block(x1, rows_w / 2 * (1 - g), 6, rows_w / 2, colors[g], f"W{g} @ col{g}\n(O/G, N·oh·ow)")
    ax.text(x1 + 3, rows_w + 0.3, "out (O, N·oh·ow)", ha="center", fontsize=9)
    ax.set_xlim(-0.2, x1 + 6.2)
    ax.set_ylim(-0.3, rows_w + 0.8)
    ax.set_title("groups=2: the zero blocks are never stored; matmul over a leading group axis "
                 "computes both products at once", fontsize=9)
    save(figure, "conv_groups.png")


# --------------------------------------------------------------------------- max-pool


def figure_pool():
    """A 7x7 input, 3x3 windows with stride 2: the gradient of each output goes to its window's maximum."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 30, size=(7, 7)).astype(np.float64)
    x[2, 2] = 95  # inside four windows
    x[4, 6] = 90  # inside two windows
    x[0, 6] = 80
    out, cache = pool.max_pool2d_forward(x.reshape(1, 1, 7, 7), (3, 3), (2, 2), (0, 0))
    dx = pool.max_pool2d_backward(np.ones_like(out), cache)[0, 0]
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.6), gridspec_kw={"width_ratios": [7, 3, 7]})
    winners = dx > 0
    grid(axes[0], x, [[f"{v:.0f}" for v in row] for row in x], winners, color="#f3c99f",
         title="x (7x7): the 9 overlapping 3x3 windows, stride 2")
    palette = plt.get_cmap("tab10")
    for y in range(3):
        for xo in range(3):
            offset = 0.06 + 0.04 * ((y + xo) % 3)
            axes[0].add_patch(Rectangle((2 * xo + offset, 7 - (2 * y + 3) + offset), 3 - 2 * offset, 3 - 2 * offset,
                                        fill=False, edgecolor=palette(y * 3 + xo), lw=1.4))
    grid(axes[1], out[0, 0], [[f"{v:.0f}" for v in row] for row in out[0, 0]], title="out (3x3)")
    grid(axes[2], dx, [[f"{v:.0f}" for v in row] for row in dx], winners, color="#f3c99f",
         title="dx when every dout = 1")
    figure.text(0.5, 0.02, "A pixel that wins k windows receives the sum of their k gradients "
                f"(here {dx[2, 2]:.0f} for the 95, {dx[4, 6]:.0f} for the 90); a pixel that wins none receives 0.",
                ha="center", fontsize=9)
    save(figure, "pool_routing.png")


# --------------------------------------------------------------------------- LRN


def figure_lrn():
    """The channel window (size 5, zero padded) and the three conventions' output curves."""
    figure = plt.figure(figsize=(9, 5.2))
    top = figure.add_axes([0.03, 0.62, 0.94, 0.33])
    top.axis("off")
    C, size = 8, 5
    before, after = size // 2, (size - 1) // 2
    for row, c in enumerate((0, 5)):
        y = 1.4 - 1.4 * row
        for j in range(-before, C + after):
            inside = 0 <= j < C
            in_window = c - before <= j <= c + after
            face = (ORANGE if j == c else "#f3c99f") if in_window else "white"
            top.add_patch(Rectangle((j + before, y), 1, 1, facecolor=face if inside else (GREY if in_window else "white"),
                                    edgecolor="black" if inside else GREY, lw=0.8, ls="-" if inside else "--"))
            top.text(j + before + 0.5, y + 0.5, f"a{j}" if inside else "0", ha="center", va="center", fontsize=8)
        top.text(C + before + after + 0.4, y + 0.5,
                 f"window of channel {c}: channels {c - before}..{c + after}" + (" (two of them are padding zeros)" if c == 0 else ""),
                 va="center", fontsize=8)
    top.set_xlim(0, C + before + after + 9)
    top.set_ylim(-0.2, 2.6)
    top.set_title("LRN sums a_j^2 over size=5 neighbouring channels at the same pixel "
                  "(size//2 before, (size-1)//2 after, zeros past the edges)", fontsize=9)

    bottom = figure.add_axes([0.08, 0.08, 0.86, 0.45])
    a = np.linspace(0, 200, 201)
    x = np.broadcast_to(a, (1, 5, 1, a.size)).astype(np.float64).copy()  # all 5 channels equal a
    settings = [
        ("paper: k=2, alpha=1e-4 (not divided by n)  ->  alpha=5e-4 here", 5e-4, 2.0, BLUE),
        ("PyTorch / minialex alexnet(): k=2, alpha=1e-4 (divided by size)", 1e-4, 2.0, ORANGE),
        ("Caffe bvlc_alexnet: k=1, alpha=1e-4 (divided by size)", 1e-4, 1.0, GREEN),
    ]
    for label, alpha, k, color in settings:
        out, _ = lrn.local_response_norm_forward(x, size, alpha, 0.75, k)
        bottom.plot(a, out[0, 2, 0], color=color, label=label)
    bottom.set_xlabel("a (the same value in all 5 channels of the window)")
    bottom.set_ylabel("b of the middle channel")
    bottom.legend(fontsize=8, loc="lower right")
    bottom.grid(alpha=0.3)
    save(figure, "lrn_window.png")


# --------------------------------------------------------------------------- ReLU


def figure_relu():
    x = np.linspace(-3, 3, 601)
    y, positive = activation.relu_forward(x)
    dx = activation.relu_backward(np.ones_like(x), positive)
    figure, (left, right) = plt.subplots(1, 2, figsize=(7, 2.6))
    left.plot(x, y, color=BLUE)
    left.set_title("forward: y = max(x, 0)", fontsize=9)
    right.plot(x[x < 0], dx[x < 0], color=ORANGE)
    right.plot(x[x > 0], dx[x > 0], color=ORANGE)
    right.plot([0], [0], "o", color=ORANGE)
    right.plot([0], [1], "o", mfc="white", color=ORANGE)
    right.set_title("backward: dy/dx = [x > 0] (0 at x = 0)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xlabel("x")
    save(figure, "relu.png")


# --------------------------------------------------------------------------- SGD


def figure_sgd():
    """One weight, loss w^2/2 (gradient w): PyTorch's and the paper's momentum across a rate drop."""
    steps, drop, lr_high, lr_low, momentum = 30, 10, 0.1, 0.01, 0.9
    w = ma.nn.Parameter(np.array([1.0]))
    optimizer = optim.SGD([w], lr=lr_high, momentum=momentum)
    torch_form, paper_form = [1.0], [1.0]
    v, wp = 0.0, 1.0
    for step in range(steps):
        lr = lr_high if step < drop else lr_low
        optimizer.param_groups[0]["lr"] = lr
        w.grad = ma.tensor(w.data.copy())  # d(w^2/2)/dw = w
        optimizer.step()
        torch_form.append(float(w.data[0]))
        v = momentum * v - lr * wp  # the paper: v = 0.9 v - lr * grad; w = w + v
        wp = wp + v
        paper_form.append(wp)
    figure, ax = plt.subplots(figsize=(7, 3))
    ax.plot(torch_form, "o-", ms=3, color=ORANGE, label="PyTorch form (minialex optim.SGD)")
    ax.plot(paper_form, "s--", ms=3, color=BLUE, label="paper form: v = 0.9 v - lr g; w = w + v")
    ax.axvline(drop, color=GREY, ls=":")
    ax.text(drop + 0.3, max(torch_form) * 0.95, f"lr {lr_high} -> {lr_low}", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("w")
    ax.set_title("identical while the rate is constant; apart after it changes", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(figure, "sgd_forms.png")


# --------------------------------------------------------------------------- AlexNet


def figure_towers():
    """Which layers see both halves of the previous layer (full) and which only their own tower (groups=2)."""
    layers = [("conv1", 96, "full"), ("conv2", 256, "grouped"), ("conv3", 384, "full"), ("conv4", 384, "grouped"),
              ("conv5", 256, "grouped"), ("fc6", 4096, "full"), ("fc7", 4096, "full"), ("fc8", 1000, "full")]
    figure, ax = plt.subplots(figsize=(10, 3.2))
    ax.axis("off")
    width, gap = 0.9, 1.4
    for n, (name, channels, kind) in enumerate(layers):
        x0 = n * gap
        halves = [("tower A", BLUE), ("tower B", ORANGE)] if n < 5 else [("", GREEN)]
        if n < 5:
            for t, (_, color) in enumerate(halves):
                ax.add_patch(Rectangle((x0, 1.2 - 1.2 * t), width, 1, facecolor=color, alpha=0.6, edgecolor="black"))
                ax.text(x0 + width / 2, 1.7 - 1.2 * t, f"{channels // 2}", ha="center", va="center", fontsize=8)
        else:
            ax.add_patch(Rectangle((x0, 0), width, 2.2, facecolor=GREEN, alpha=0.5, edgecolor="black"))
            ax.text(x0 + width / 2, 1.1, f"{channels}", ha="center", va="center", fontsize=8)
        ax.text(x0 + width / 2, 2.45, name, ha="center", fontsize=9)
        ax.text(x0 + width / 2, -0.35, "groups=2" if kind == "grouped" else "sees all", ha="center", fontsize=7)
        if n == 0:
            continue
        prev = (n - 1) * gap + width
        sources = [1.7, 0.5] if n - 1 < 5 else [1.1]
        targets = [1.7, 0.5] if n < 5 else [1.1]
        for s_index, sy in enumerate(sources):
            for t_index, ty in enumerate(targets):
                if kind == "grouped" and s_index != t_index:
                    continue
                ax.add_patch(FancyArrowPatch((prev, sy), (x0, ty), arrowstyle="-|>", mutation_scale=8, lw=0.8,
                                             color="black" if s_index == t_index or len(targets) == 1 else "#aa3333"))
    ax.set_xlim(-0.2, len(layers) * gap)
    ax.set_ylim(-0.6, 2.7)
    ax.set_title("The two towers: numbers are output channels per tower; red arrows cross between the towers "
                 "(conv3 and the fc layers)", fontsize=9)
    save(figure, "alexnet_towers.png")


# --------------------------------------------------------------------------- autograd


def figure_graph():
    """loss = (a * b + b).sum(): the recorded Functions, numbered in the order backward visits them."""
    a = ma.tensor([1.0, 2.0], requires_grad=True)
    b = ma.tensor([3.0, 4.0], requires_grad=True)
    product = a * b
    total = product + b
    loss = total.sum()
    order = {f: i + 1 for i, f in enumerate(_topological_order(loss.grad_fn))}
    nodes = {
        "a": (0, 2, "a (leaf)"), "b": (0, 0, "b (leaf)"),
        "mul": (2, 2, f"Mul  #{order[product.grad_fn]}"), "add": (4, 1, f"Add  #{order[total.grad_fn]}"),
        "sum": (6, 1, f"Sum  #{order[loss.grad_fn]}"), "loss": (8, 1, "loss"),
    }
    edges = [("a", "mul"), ("b", "mul"), ("mul", "add"), ("b", "add"), ("add", "sum"), ("sum", "loss")]
    figure, ax = plt.subplots(figsize=(8, 2.6))
    ax.axis("off")
    for key, (x, y, text) in nodes.items():
        leaf = key in ("a", "b")
        ax.add_patch(Rectangle((x - 0.7, y - 0.3), 1.4, 0.6, facecolor="#dfe8f5" if leaf else "#f3c99f",
                               edgecolor="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
    for start, end in edges:
        (x0, y0, _), (x1, y1, _) = nodes[start], nodes[end]
        ax.add_patch(FancyArrowPatch((x0 + 0.7, y0), (x1 - 0.7, y1), arrowstyle="-|>", mutation_scale=9, lw=0.8))
    ax.set_xlim(-1, 9)
    ax.set_ylim(-0.6, 2.6)
    ax.set_title("loss = (a*b + b).sum(): forward left to right; backward visits the Functions in the order #1, #2, #3 "
                 "(b gets gradient from Mul and Add, summed)", fontsize=8)
    save(figure, "autograd_graph.png")


# --------------------------------------------------------------------------- dropout, linear, softmax


def figure_dropout():
    """The same 6x6 activations under inverted dropout and the paper's form (one mask draw)."""
    ma.manual_seed(0)
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(0.5, 2.0, size=(6, 6)), 1).astype(np.float32)
    y, mask = dropout.dropout_forward(x, 0.5)
    keep = mask > 0
    panels = [
        ("x", x, None), ("inverted, training:\nx * mask, mask in {0, 2}", y, keep), ("inverted, evaluation:\nx (unchanged)", x, None),
        ("paper, training:\nx * keep, keep in {0, 1}", x * keep, keep), ("paper, test:\n0.5 * x", 0.5 * x, None),
    ]
    figure, axes = plt.subplots(1, 5, figsize=(12, 2.9))
    for ax, (title, values, highlight) in zip(axes, panels):
        grid(ax, values, [[f"{v:.1f}".rstrip("0").rstrip(".") if v else "0" for v in row] for row in values],
             highlight, color="#f3c99f", title=title)
    figure.text(0.5, 0.02, "Kept units shaded; both forms use the same draw. In expectation inverted training "
                "matches its evaluation (x), and paper training matches paper test (0.5 x).", ha="center", fontsize=9)
    save(figure, "dropout.png")


def figure_linear():
    """The three GEMMs of a linear layer, drawn to scale for N=4, in=6, out=3."""
    N, IN, OUT = 4, 6, 3
    figure, axes = plt.subplots(1, 3, figsize=(11, 2.8))

    def matrix(ax, x0, rows, cols, label, color):
        ax.add_patch(Rectangle((x0, -rows / 2), cols, rows, facecolor=color, edgecolor="black", alpha=0.7))
        ax.text(x0 + cols / 2, -rows / 2 - 0.45, label, ha="center", va="top", fontsize=8)
        return x0 + cols

    products = [
        ("forward:  y = x @ W.T", [("x", N, IN, BLUE), ("W.T", IN, OUT, ORANGE), ("y", N, OUT, GREEN)]),
        ("backward:  dx = dy @ W", [("dy", N, OUT, GREEN), ("W", OUT, IN, ORANGE), ("dx", N, IN, BLUE)]),
        ("backward:  dW = dy.T @ x", [("dy.T", OUT, N, GREEN), ("x", N, IN, BLUE), ("dW", OUT, IN, ORANGE)]),
    ]
    for ax, (title, mats) in zip(axes, products):
        x0 = 0
        for k, (name, rows, cols, color) in enumerate(mats):
            x0 = matrix(ax, x0, rows, cols, f"{name} ({rows}, {cols})", color)
            if k < 2:
                ax.text(x0 + 0.6, 0, "@" if k == 0 else "=", ha="center", va="center", fontsize=13)
                x0 += 1.2
        ax.set_xlim(-0.3, x0 + 0.3)
        ax.set_ylim(-4.2, 3.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=9)
    figure.suptitle("Each gradient has the shape of its variable (N=4, in=6, out=3); "
                    "db = dy summed over the N rows", fontsize=9)
    save(figure, "linear.png")


def figure_softmax():
    """One row of logits: softmax, the one-hot target and the fused gradient softmax - onehot."""
    logits = np.array([[2.0, 1.0, 0.1, -1.0, 0.5]])
    target = np.array([2])
    _, cache = softmax_xent.cross_entropy_forward(logits, target)
    grad = softmax_xent.cross_entropy_backward(np.float64(1.0), cache)[0]
    probs = softmax_xent.softmax(logits)[0]
    onehot = np.eye(5)[target[0]]
    classes = np.arange(5)
    figure, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=False)
    axes[0].bar(classes, probs, color=BLUE)
    axes[0].set_title("softmax(logits)", fontsize=9)
    axes[1].bar(classes, onehot, color=ORANGE)
    axes[1].set_title(f"onehot(target = {target[0]})", fontsize=9)
    axes[2].bar(classes, grad, color=[GREEN if g < 0 else "#aa3333" for g in grad])
    axes[2].axhline(0, color="black", lw=0.6)
    axes[2].set_title("dlogits = (softmax - onehot) / N,  N = 1", fontsize=9)
    for ax in axes:
        ax.set_xticks(classes)
        ax.set_xlabel("class")
        ax.grid(alpha=0.3, axis="y")
    figure.text(0.5, -0.12, f"logits {logits[0].tolist()}: gradient descent raises the target's logit "
                "(negative gradient) and lowers every other logit by its probability", ha="center", fontsize=9)
    save(figure, "softmax_xent.png")


# --------------------------------------------------------------------------- data augmentation (real images)


def test_images(dataset, indices):
    """Some real test images of MNIST or Fashion-MNIST as float (n, 1, 28, 28) in [0, 1].

    Read from the project's copy in ../shared/data when it is there, otherwise downloaded (MD5-checked)."""
    from minialex.data import MNIST, FashionMNIST, ToFloat

    shared = os.path.join(ROOT, "..", "shared", "data", dataset)
    kind = MNIST if dataset == "mnist" else FashionMNIST
    data = kind(root=shared if os.path.isdir(shared) else None, train=False)
    return ToFloat(np.float64)(data.images[indices])


def show(ax, image, title=None, window=None, color=ORANGE, caption=None):
    """Draw (1 or 3, H, W) in [0, 1] (``caption`` below it); ``window`` (top, left, h, w) is outlined, the
    rest dimmed."""
    picture = np.clip(np.moveaxis(image, 0, -1), 0, 1)
    if window is not None:
        top, left, h, w = window
        inside = np.zeros(picture.shape[:2], bool)
        inside[top:top + h, left:left + w] = True
        picture = np.where(inside[..., None], picture, 0.35 * picture + 0.25)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=color, lw=1.5))
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)
    if caption:
        ax.set_xlabel(caption, fontsize=7)


def crop_windows(crop, images, size):
    """Apply a crop to the images and learn where each window came from: the images are cropped together
    with two extra channels holding each pixel's row and column, which the crop moves with the pixels."""
    n, _, height, width = images.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coordinates = np.broadcast_to(np.stack([rows, cols]).astype(images.dtype), (n, 2, height, width))
    out = crop(np.concatenate([images, coordinates], axis=1))
    return out[:, :-2], [(int(o[-2, 0, 0]), int(o[-1, 0, 0]), size, size) for o in out]


def figure_augment_crop_flip():
    """RandomCrop (with padding, and without: where the window fell), CenterCrop and RandomHorizontalFlip."""
    from minialex.data import CenterCrop, RandomCrop, RandomHorizontalFlip

    images = np.concatenate([test_images("mnist", [0, 1, 2, 3]), test_images("fashion-mnist", [0, 1, 2, 3])])
    ma.manual_seed(0)
    shifted = RandomCrop(28, padding=4)(images)
    _, windows = crop_windows(RandomCrop(20), images, 20)
    center = CenterCrop(20)
    centre_top = int(round((28 - 20) / 2.0))
    assert np.array_equal(center(images), images[:, :, centre_top:centre_top + 20, centre_top:centre_top + 20])
    flip = RandomHorizontalFlip(0.5)
    flipped = flip(images)
    rows = ["original", "RandomCrop(28,\npadding=4)", "RandomCrop(20)", "CenterCrop(20)", "RandomHorizontal-\nFlip(0.5)"]
    figure, axes = plt.subplots(len(rows), len(images), figsize=(8.2, 6.4))
    for k, image in enumerate(images):
        show(axes[0, k], image)
        show(axes[1, k], shifted[k])
        show(axes[2, k], image, caption=f"offset {windows[k][:2]}", window=windows[k])
        show(axes[3, k], image, window=(centre_top, centre_top, 20, 20), color=BLUE)
        mirrored = not np.array_equal(flipped[k], image)
        show(axes[4, k], flipped[k], caption="flipped" if mirrored else "kept")
    for r, label in enumerate(rows):
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    figure.text(0.5, 0.02, "Real MNIST and Fashion-MNIST test images (ma.manual_seed(0)). Padding shifts each image by "
                "up to 4 pixels (zero fill); a 20x20 crop is drawn as its window (the rest dimmed); "
                "CenterCrop's window is the same for every image.", ha="center", fontsize=7, wrap=True)
    save(figure, "augment_crop_flip.png")


def figure_augment_ten_crop():
    """The ten crops of one image in torchvision's order."""
    from minialex.data import TenCrop

    image = test_images("fashion-mnist", [0])  # an ankle boot: not symmetric, so the mirror shows
    crops = TenCrop(20)(image)[:, 0]
    _, _, height, width = image.shape
    centre = int(round((28 - 20) / 2.0))
    corners = [(0, 0), (0, width - 20), (height - 20, 0), (height - 20, width - 20), (centre, centre)]
    names = ["top-left", "top-right", "bottom-left", "bottom-right", "centre"]
    figure, axes = plt.subplots(2, 7, figsize=(9.5, 3.0), gridspec_kw={"width_ratios": [1.4, 0.15, 1, 1, 1, 1, 1]})
    for r, source in enumerate([image[0], image[0][..., ::-1]]):
        show(axes[r, 0], source, "image" if r == 0 else "flipped image")
        axes[r, 1].axis("off")
        for k in range(5):
            top, left = corners[k]
            assert np.array_equal(crops[5 * r + k], source[:, top:top + 20, left:left + 20])
            show(axes[r, 2 + k], crops[5 * r + k], f"[{5 * r + k}] {names[k]}")
    figure.text(0.5, -0.02, "TenCrop(20) of a 28x28 Fashion-MNIST test image: out[0..4] are the corners and centre of the "
                "image, out[5..9] the same five of its mirror image (torchvision's order).", ha="center", fontsize=8)
    save(figure, "augment_ten_crop.png")


def figure_augment_pca_lighting():
    """PCALighting with ImageNet's components on real (grey, so R = G = B) images, at the paper's std and larger."""
    from minialex.data import PCALighting

    grey = test_images("fashion-mnist", [0, 1, 2, 3, 4])
    images = np.repeat(grey, 3, axis=1)  # RGB with R = G = B
    stds = [0.1, 0.5, 1.0]
    figure, axes = plt.subplots(1 + len(stds), len(images), figsize=(7.6, 6.6))
    for k, image in enumerate(images):
        show(axes[0, k], image)
    for r, std in enumerate(stds, 1):
        ma.manual_seed(r)
        out = PCALighting(std)(images)
        for k in range(len(images)):
            offset = (out[k] - images[k])[:, 0, 0]
            show(axes[r, k], out[k], caption="R {:+.3f}\nG {:+.3f}  B {:+.3f}".format(*offset))
        axes[r, 0].set_ylabel(f"std = {std}", fontsize=8, rotation=0, ha="right", va="center")
    axes[0, 0].set_ylabel("original\n(R = G = B)", fontsize=8, rotation=0, ha="right", va="center")
    figure.text(0.5, -0.04, "PCALighting with fb.resnet.torch's ImageNet eigenvalues and eigenvectors on Fashion-MNIST test "
                "images copied to R, G and B: one RGB offset per image, the same on every pixel (shown clipped to "
                "[0, 1]). std = 0.1 is the paper's; the larger ones make the directions visible: brightness "
                "(first component) and red against blue (second).", ha="center", fontsize=7, wrap=True)
    save(figure, "augment_pca_lighting.png")


# --------------------------------------------------------------------------- look inside (look_inside.md)


def figure_look_trace():
    """The profiler's Chrome trace of one alexnet_mnist SGD step (batch 16), drawn as a timeline."""
    import minialex.functional as F  # noqa: PLC0415
    from minialex import models, profiler  # noqa: PLC0415

    ma.manual_seed(0)
    model = models.alexnet_mnist()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = ma.Tensor(np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32))
    labels = np.arange(16) % 10
    for _ in range(2):  # the second step is timed: the first allocates the reused buffers
        with profiler.profile() as prof:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as file:
            events = [e for e in json.load(file)["traceEvents"] if e.get("ph") == "X"]
    start = min(e["ts"] for e in events)
    names = list(dict.fromkeys(e["name"] for e in sorted(events, key=lambda e: e["ts"])))
    figure, ax = plt.subplots(figsize=(9, 3.2))
    for event in events:
        row = names.index(event["name"])
        color = BLUE if event["cat"] == "forward" else ORANGE
        ax.broken_barh([((event["ts"] - start) / 1e3, max(event["dur"] / 1e3, 0.05))], (row - 0.4, 0.8),
                       color=color)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the step began")
    ax.set_title("One alexnet_mnist training step (batch 16): forward (blue), backward (orange)")
    ax.grid(axis="x", alpha=0.3)
    save(figure, "look_trace.png")


def figure_look_graph():
    """The autograd graph of a two-layer net's loss, rendered from viz.to_dot by Graphviz's dot."""
    import minialex.functional as F  # noqa: PLC0415
    from minialex import nn, viz  # noqa: PLC0415

    ma.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    loss = F.cross_entropy(model(ma.tensor(np.ones((5, 4), np.float32))), np.array([0, 1, 1, 0, 1]))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "graph.png")
        viz.plot_graph(loss, path, params=model)
        copy_figure(path, "look_graph.png")


def figure_look_trained():
    """conv1's filters and one digit's feature maps after one epoch of MNIST, as train_mnist.py --plots draws them."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("train_mnist", os.path.join(ROOT, "examples", "train_mnist.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = os.path.join(ROOT, "..", "shared", "data", "mnist")
    with tempfile.TemporaryDirectory() as folder:
        example.main(["--data-dir", data, "--epochs", "1", "--out-dir", folder, "--no-progress", "--plots"])
        copy_figure(os.path.join(folder, "filters_conv1.png"), "look_filters_conv1.png")
        copy_figure(os.path.join(folder, "feature_maps.png"), "look_feature_maps.png")


# --------------------------------------------------------------------------- benchmark results (gpu.md)


def benchmark_figures():
    """The plots of the published results in benchmarks/results/, as gpu.md and cpu_speed.md show them."""
    from benchmarks import plots  # noqa: PLC0415 - only for these figures

    cpu, gpu, engines = "cpu-2core-amd-epyc", "gpu-nvidia-h100-80gb-hbm3", "engines-2core-amd-epyc"
    figure = plots.ratio_figure(plots.load(cpu), cpu)
    save(figure, "cpu-2core-amd-epyc-ratios.png")
    figure = plots.kernels_figure(plots.load(cpu), cpu)
    save(figure, "cpu-2core-amd-epyc-kernels.png")
    figure = plots.step_figure(plots.load(cpu), cpu)
    save(figure, "cpu-2core-amd-epyc-step.png")
    figure = plots.ratio_figure(plots.load(gpu), gpu)
    save(figure, "gpu-nvidia-h100-80gb-hbm3-ratios.png")
    figure = plots.kernels_figure(plots.load(gpu), gpu)
    save(figure, "gpu-nvidia-h100-80gb-hbm3-kernels.png")
    figure = plots.ratio_figure(plots.load(engines), engines)
    save(figure, "engines-2core-amd-epyc-ratios.png")
    switches = "switches-2core-amd-epyc"  # shown by cpu_speed.md
    figure = plots.before_after_figure(plots.load(switches), switches)
    save(figure, "switches-2core-amd-epyc-fastpaths.png")


def main(argv=None):
    os.makedirs(FIGURES, exist_ok=True)
    if (argv if argv is not None else sys.argv[1:]) == ["benchmarks"]:
        benchmark_figures()
        return
    if (argv if argv is not None else sys.argv[1:]) == ["look-inside"]:
        for make in (figure_look_trace, figure_look_graph, figure_look_trained):
            make()
        return
    for make in (figure_im2col, figure_groups, figure_pool, figure_lrn, figure_relu, figure_dropout, figure_linear,
                 figure_softmax, figure_sgd, figure_towers, figure_graph, figure_augment_crop_flip,
                 figure_augment_ten_crop, figure_augment_pca_lighting, figure_look_trace, figure_look_graph,
                 figure_look_trained, benchmark_figures):
        make()


if __name__ == "__main__":
    main()
