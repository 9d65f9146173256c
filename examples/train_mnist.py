"""Train AlexNet on MNIST (or Fashion-MNIST) with minialex.

    python examples/train_mnist.py --data-dir ../shared/data/mnist
    python examples/train_mnist.py --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist
    python examples/train_mnist.py --model alexnet --device cuda --epochs 1     # the 227x227 net, on a GPU
    mpiexec -n 2 python examples/train_mnist.py --distributed                   # data-parallel, 2 processes
    python examples/train_mnist.py --evaluate --plots                           # pictures of the trained net
    python examples/train_mnist.py --model alexnet --device cuda --amp          # mixed precision (float16 GEMMs)

Every epoch prints train loss, test loss, test accuracy and wall time, writes
the metrics to <out-dir>/metrics.json and .csv (plus curves.png when
matplotlib is installed) and saves a checkpoint (model, optimiser, scheduler,
RNG, epoch) atomically. ``--resume`` continues from it and ends with the same
parameters as a run that was never interrupted. ``--plots`` also draws, at
the end, filters_conv1.png (the first convolution's kernels) and
feature_maps.png (every layer's output for the first test image); with
``--evaluate`` it draws them for the checkpoint's model. The progress bar is
shown only on a terminal: redirected to a file, the log stays one line an epoch.

With ``--distributed`` under ``mpiexec -n N`` each of the N processes trains
on its share of every batch (``--batch-size`` is the global batch, split over
the ranks) and the gradients are averaged before each step; rank 0 alone
prints and writes the metrics and the checkpoint. Each rank's random numbers
(dropout masks, augmentation) are reseeded every epoch from (--seed, rank,
epoch), so a resumed distributed run continues exactly as it would have.

With ``--amp`` the forward passes run under ``amp.autocast`` (convolutions and
linear layers in float16, the loss in float32, the weights kept in float32)
and the gradients go through an ``amp.GradScaler``: a step whose gradients
overflowed is skipped and the loss scale lowered. The checkpoint then holds
the scaler's state too. On the CPU, NumPy's float16 products have no BLAS and
are far slower than float32: mixed precision is for the GPU.

Before each save the test loss and every parameter are checked: a model that
became infinite or NaN stops the run and never replaces a good checkpoint.
"""

import argparse
import contextlib
import csv
import glob
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import traceback
import zipfile

import minialex as ma  # before NumPy: its OpenBLAS setting takes effect only then (minialex/__init__.py)
import numpy as np
import minialex.distributed as dist
import minialex.functional as F
from minialex import amp, backend, models, nn, optim
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.data import (MNIST, CenterCrop, Compose, DataLoader, FashionMNIST, Normalize, Pad, PCALighting,
                           RandomCrop, RandomHorizontalFlip, RandomShiftCrop, Resize, Subset, ToFloat, ten_crop_predict)
from minialex.io import atomic_write

DATASETS = {"mnist": (MNIST, Normalize.MNIST), "fashion-mnist": (FashionMNIST, Normalize.FASHION_MNIST)}
# --dataset folder: --data-dir holds train/ and test/ folders of class folders (ImageFolder trees).
FOLDER = "folder"
# Digits must not be mirrored (a flipped 2 is no digit); clothes and most photos may.
FLIP_IS_SAFE = {"mnist": False, "fashion-mnist": True, FOLDER: True}
# --augment on 28x28 images: random 28x28 crops of the image zero-padded by this many pixels.
CROP_PADDING = 2

# The options that shape the run and are stored in its checkpoint. --resume takes them from the
# checkpoint; giving one of them with a different value is an error (see check_resume_options).
# --epochs may change (to extend a run); --device, --data-dir and the output options may too.
RUN_SETTINGS = ("dataset", "model", "init", "optimizer", "batch_size", "lr", "momentum", "weight_decay", "nesterov",
                "scheduler", "step_size", "gamma", "warmup_steps", "shift", "augment", "val_split", "seed",
                "limit_train", "limit_test", "amp")
# --lr when it is not given: SGD's rate for this net, and Adam's usual default.
DEFAULT_LR = {"sgd": 0.02, "adam": 1e-3, "adamw": 1e-3}

# The warm-up may take at most this fraction of the run's steps: a warm-up longer than the run
# never reaches the chosen rate. (--limit-train 3000 --epochs 1 is 47 steps: with the 300-step
# warm-up it scored 52% on 2000 test images, with a 12-step one 73%.)
MAX_WARMUP_FRACTION = 0.25

# --plots: the first convolution's kernels, and every layer's output for the first test image.
FILTERS_PLOT = "filters_conv1.png"
FEATURE_MAPS_PLOT = "feature_maps.png"
# The files this script writes into --out-dir (besides the checkpoint); atomic_write puts their
# temporary copies beside them as "<name>.<random>.tmp".
OUTPUT_FILES = ("metrics.json", "metrics.csv", "curves.png", FILTERS_PLOT, FEATURE_MAPS_PLOT)


class DefaultsOnceHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help once, and only where it tells something.

    argparse's ArgumentDefaultsHelpFormatter adds it to every option: also after a help text that
    already gives the default (an option whose default is worked out from others, like --lr, whose
    parser default is None), and "(default: False)" to every on/off flag. Here a help text that
    mentions its default keeps its own words, a flag shows none, and a None default is never shown.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)".strip()


def describe_default_lrs():
    """DEFAULT_LR in words: "0.02 for sgd, 0.001 for adam and adamw"."""
    optimizers_by_rate = {}
    for optimizer, rate in DEFAULT_LR.items():
        optimizers_by_rate.setdefault(rate, []).append(optimizer)
    return ", ".join(f"{rate:g} for {' and '.join(names)}" for rate, names in optimizers_by_rate.items())


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsOnceHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS) + [FOLDER], default="mnist",
                        help="folder: your own images, --data-dir holding train/<class>/* and test/<class>/*")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four .gz files (or the train/ and test/ folders of --dataset folder); "
                             "default: the download cache ($MINIALEX_DATA or ~/.cache/minialex)")
    parser.add_argument("--model", choices=["alexnet-mnist", "alexnet"], default="alexnet-mnist",
                        help="alexnet-mnist: the 28x28 net (CPU, minutes); alexnet: the 227x227 single-tower net (GPU)")
    parser.add_argument("--init", choices=list(models.INITIALISATIONS), default="kaiming",
                        help="weight initialisation (He's 'kaiming' starts learning soonest)")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images a step (with --distributed: over all ranks together)")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                        help="sgd: with --momentum (and --nesterov); adam: weight decay added to the gradient; "
                             "adamw: weight decay applied to the weights (decoupled)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate; default: {describe_default_lrs()}")
    parser.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="L2 penalty on the weights")
    parser.add_argument("--nesterov", action="store_true", help="sgd only")
    parser.add_argument("--scheduler", choices=["none", "step", "plateau", "cosine"], default=None,
                        help=f"default: {default_scheduler('alexnet-mnist')} for alexnet-mnist, "
                             f"{default_scheduler('alexnet')} for alexnet (made for one-epoch GPU runs); "
                             "step: multiply the rate by --gamma every --step-size epochs; "
                             "plateau: divide by 10 when the validation loss stalls (the paper's rule; needs "
                             "--val-split); "
                             "cosine: lower it every batch along half a cosine, to 0 at the end of the run")
    parser.add_argument("--step-size", type=int, default=3, help="epochs between the step scheduler's cuts")
    parser.add_argument("--gamma", type=float, default=0.1, help="the step scheduler's factor")
    parser.add_argument("--warmup-steps", type=int, default=300,
                        help="raise the rate linearly from 0 over the first N steps (0: none); without it the "
                             "unnormalised 8-layer net sometimes never leaves chance level. At most a quarter of "
                             "the run's steps: a longer warm-up is shortened to that, with a notice")
    parser.add_argument("--shift", type=int, default=0, help="random shift augmentation, in pixels (0: none)")
    parser.add_argument("--augment", action="store_true",
                        help="the training-image recipe: for the 28x28 net random 28x28 crops of the image padded "
                             f"by {CROP_PADDING} (and horizontal flips, except for digits); for the 227x227 net "
                             "the paper's resize to 256, random 227x227 crops, flips and PCA colour noise (colour "
                             "images)")
    parser.add_argument("--ten-crop", action="store_true",
                        help="test on ten crops of each image (corners, centre and their mirror images) and "
                             "average the ten softmax outputs")
    parser.add_argument("--val-split", type=int, default=0, metavar="N",
                        help="hold out N training images (drawn with --seed) as a validation set: the plateau "
                             "scheduler and the blow-up check use it; the test set is only reported")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="initial weights, data order, dropout and augmentation")
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (default: <out-dir>/checkpoint.npz)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --checkpoint with the settings stored in it (dataset, model, init, "
                             "optimizer, batch size, lr, momentum, weight decay, nesterov, scheduler, step size, "
                             "gamma, warm-up, shift, augment, val split, seed, limits, amp), as loading PyTorch's "
                             "state_dicts would; an option "
                             "among these given with another value is an error (start a new run in another "
                             "--out-dir instead). --epochs may change, to extend the run")
    parser.add_argument("--evaluate", action="store_true",
                        help="only test the model in --checkpoint (with its stored settings, as --resume; "
                             "add --ten-crop to test on ten crops) and exit")
    parser.add_argument("--out-dir", default=None, help="metrics and plots (default: runs/<dataset>-<model>)")
    parser.add_argument("--plots", action="store_true",
                        help=f"at the end of training (or with --evaluate) also draw {FILTERS_PLOT} (the first "
                             f"convolution's kernels) and {FEATURE_MAPS_PLOT} (every layer's output for the first "
                             "test image) into --out-dir; needs matplotlib (the plot extra)")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N",
                        help="train on the first N images only (default: all)")
    parser.add_argument("--limit-test", type=int, default=None, metavar="N",
                        help="test on the first N images only (default: all)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="K",
                        help="decode batches in K worker processes (for --dataset folder with many JPEGs); "
                             "the batches are the same as with 0")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when the output is not a terminal)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: convolutions and linear layers in float16 under amp.autocast, the "
                             "weights and the loss in float32, the gradients through a GradScaler (its state is "
                             "saved in the checkpoint). Made for the GPU: NumPy's float16 products are slow")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training over the processes started by mpiexec (mpiexec -n 2 python "
                             "examples/train_mnist.py --distributed): --batch-size is split over the ranks and the "
                             "gradients are averaged every step; needs the 'dist' extra")
    parser.add_argument("--dist-backend", choices=list(dist.BACKENDS), default=None,
                        help="with --distributed: mpi (any device) or nccl (one GPU per process); "
                             "default: nccl for a cuda --device, else mpi")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # Which options were written on the command line, not just left at their defaults (--resume
    # needs to know): argparse fills in a default only where the namespace has no value yet, so a
    # second parse into a namespace pre-filled with a marker leaves the marker where none was given.
    not_given = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(vars(args), not_given)))
    args.given = {name for name, value in vars(probe).items() if value is not not_given}
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    for name in ("limit_train", "limit_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if not args.lr > 0 or not math.isfinite(args.lr):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if args.optimizer != "sgd":
        for name in ("momentum", "nesterov"):
            if name in args.given:
                parser.error(f"--{name} is for --optimizer sgd; {args.optimizer} keeps its own moment estimates")
    if args.num_workers < 0:
        parser.error(f"--num-workers must be at least 0, got {args.num_workers}")
    if args.num_workers and args.dataset != FOLDER:
        parser.error("--num-workers is for --dataset folder: MNIST's images are already in memory, "
                     "there is nothing to decode")
    if args.val_split < 0:
        parser.error(f"--val-split must be at least 0, got {args.val_split}")
    if args.dataset == FOLDER and args.data_dir is None:
        parser.error("--dataset folder needs --data-dir (a folder with train/ and test/ class folders)")
    if args.plots and importlib.util.find_spec("matplotlib") is None:
        # Now, not after the training it would follow.
        parser.error("--plots draws with matplotlib, which is not installed: pip install -e '.[plot]'")
    if args.dist_backend is not None and not args.distributed:
        parser.error("--dist-backend is for --distributed")
    if args.distributed and args.dist_backend is None:
        args.dist_backend = "nccl" if args.device.strip().lower().startswith("cuda") else "mpi"
    if args.dist_backend == "nccl" and not args.device.strip().lower().startswith("cuda"):
        parser.error(f"--dist-backend nccl moves GPU arrays: it needs --device cuda, got --device {args.device}")
    args.scheduler = args.scheduler or default_scheduler(args.model)
    args.out_dir = args.out_dir or os.path.join("runs", f"{args.dataset}-{args.model}")
    args.checkpoint = args.checkpoint or os.path.join(args.out_dir, "checkpoint.npz")
    return args


def default_scheduler(model):
    return "cosine" if model == "alexnet" else "step"


class EveryRankExit(SystemExit):
    """A refusal that every rank of a --distributed run reaches at the same point.

    It comes from the options every rank parsed alike, or from rank 0's verdict
    handed to all (``on_rank_zero``), so no rank is left waiting in a
    collective: the ranks end with a normal MPI finalize instead of an abort.
    An abort would kill rank 0 at once, and the launcher may then drop the
    message rank 0 has just written. Outside a --distributed run it is a
    plain SystemExit.
    """


def read_checkpoint_record(path):
    """The JSON record of a checkpoint (epoch, history, args, ...), read without building a model."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(str(archive["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise SystemExit(f"--resume: {path} is not a readable minialex checkpoint ({error})") from None


def check_resume_options(args, record):
    """Take the run's settings from the checkpoint; refuse a given option that contradicts one.

    The optimiser's and scheduler's state_dicts restore the rate, momentum and
    schedule anyway (as in PyTorch), so a different --lr would be silently
    ignored and then recorded as if it had been used. An option left at its
    default takes the checkpoint's value, so the settings saved with the next
    checkpoint are the ones the run really uses.
    """
    stored = record.get("args")
    if stored is None:
        return  # a checkpoint saved without its settings: nothing to compare with
    for name in RUN_SETTINGS:
        if name not in stored:
            continue
        option = "--" + name.replace("_", "-")
        if name in args.given and getattr(args, name) != stored[name]:
            raise EveryRankExit(
                f"--resume: {option} {getattr(args, name)} differs from the checkpoint's {stored[name]} "
                f"({args.checkpoint}); a resumed run keeps the checkpoint's settings. Leave {option} out, "
                "or start a new run with another --out-dir"
            )
        if getattr(args, name) != stored[name]:
            print(f"{option} {stored[name]} (from the checkpoint)")
        setattr(args, name, stored[name])
    if "warmup_steps_used" in stored:
        args.warmup_steps_used = stored["warmup_steps_used"]


def check_writable(folder, option):
    """Fail now, not after an epoch of training, when ``folder`` cannot take our files."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SystemExit(f"{option} {folder!r} is not a writable folder ({error.strerror or error})") from None


def remove_stale_temporaries(args):
    """Delete the "<name>.<random>.tmp" files that a killed write of this run's own files left behind.

    Only the names this script writes are touched: anything else in --out-dir is not ours.
    """
    targets = [os.path.join(args.out_dir, name) for name in OUTPUT_FILES] + [args.checkpoint]
    removed = []
    for target in targets:
        for stale in glob.glob(glob.escape(target) + ".*.tmp"):
            os.remove(stale)
            removed.append(stale)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted write: {', '.join(sorted(removed))}")


def plan_warmup(args, steps_per_epoch):
    """The warm-up length this run uses: --warmup-steps, shortened to fit the run."""
    total_steps = args.epochs * steps_per_epoch
    limit = int(MAX_WARMUP_FRACTION * total_steps)
    if args.warmup_steps <= limit:
        return args.warmup_steps
    print(f"note: --warmup-steps {args.warmup_steps} is more than {MAX_WARMUP_FRACTION:.0%} of the run's "
          f"{total_steps} steps ({args.epochs} epoch{'s' if args.epochs != 1 else ''} of {steps_per_epoch}); "
          f"warming up over {limit} steps instead", flush=True)
    return limit


def non_finite_problem(loss, model, which="test"):
    """What is infinite or NaN about the model after an epoch, or None when it is all finite."""
    if not math.isfinite(loss):
        return f"the {which} loss became {loss}"
    for name, parameter in model.named_parameters():
        xp = backend.get_array_module(parameter.data)
        if not bool(xp.isfinite(parameter.data).all()):
            return f"parameter {name} holds infinite or NaN values"
    return None


def load_datasets(args, train_transform, test_transform):
    """(training set with train_transform, the same images with test_transform, test set, class count)."""
    if args.dataset == FOLDER:
        from minialex.data import ImageFolder  # noqa: PLC0415 - needs Pillow (the vision extra)

        roots = [os.path.join(args.data_dir, split) for split in ("train", "test")]
        train, train_plain, test = (ImageFolder(root, transform=transform) for root, transform in
                                    ((roots[0], train_transform), (roots[0], test_transform), (roots[1], test_transform)))
        if test.classes != train.classes:
            raise SystemExit(f"--data-dir: {roots[1]} has classes {test.classes}, {roots[0]} has {train.classes}")
        return train, train_plain, test, len(train.classes)
    dataset_class = DATASETS[args.dataset][0]
    train = dataset_class(args.data_dir, train=True, transform=train_transform)
    train_plain = dataset_class(args.data_dir, train=True, transform=test_transform)
    test = dataset_class(args.data_dir, train=False, transform=test_transform)
    return train, train_plain, test, len(train.classes)


def folder_statistics(args):
    """Channels, image size and per-channel mean and std (on the [0, 1] scale) of up to 1,000 training images."""
    from minialex.data import ImageFolder  # noqa: PLC0415 - needs Pillow (the vision extra)

    raw = ImageFolder(os.path.join(args.data_dir, "train"))
    if len(raw) == 0:
        raise SystemExit(f"--data-dir: {raw.root} holds no images")
    sample = np.random.default_rng(args.seed).permutation(len(raw))[:1000]
    images, _ = raw.get_batch(np.sort(sample))
    pixels = images.astype(np.float64) / 255
    return images.shape[1], images.shape[2:], pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3)) + 1e-8


def build_transforms(args, channels, mean, std, image_size=(28, 28)):
    """(training transform, test transform, ten-crop size or None), the recipe of --augment and --ten-crop.

    Random crops and flips work on the raw images (a zero pad is black, as in torchvision);
    PCA colour noise on colours scaled to [0, 1], before normalising.
    """
    to_float = [ToFloat()]
    normalise = [Normalize(mean, std)]
    flip = [RandomHorizontalFlip()] if FLIP_IS_SAFE[args.dataset] else []
    if args.model == "alexnet":
        if args.augment:  # the paper: 256x256 images, random 227x227 crops, mirrors, PCA lighting
            lighting = [PCALighting()] if channels == 3 else []
            train = to_float + lighting + normalise + [Resize(256), RandomCrop(227)] + flip
        else:
            train = to_float + normalise + [Resize(227)]
        test = to_float + normalise + ([Resize(256)] if args.ten_crop else
                                       [Resize(256), CenterCrop(227)] if args.augment else [Resize(227)])
        ten_crop_size = 227 if args.ten_crop else None
    else:
        resize = [] if tuple(image_size) == (28, 28) else [Resize(28)]  # your own images, for the 28x28 net
        shift = [RandomShiftCrop(args.shift)] if args.shift else []
        crop = [RandomCrop(28, padding=CROP_PADDING)] + flip if args.augment else []
        train = resize + crop + shift + to_float + normalise
        # Ten 28x28 crops of the image padded as for training: the views the net was trained on.
        test = resize + ([Pad(CROP_PADDING)] if args.ten_crop else []) + to_float + normalise
        ten_crop_size = 28 if args.ten_crop else None
    return Compose(train), Compose(test), ten_crop_size


def build_data(args):
    """Training, validation (or None) and test loaders, the class count, the channels and the ten-crop size."""
    if args.dataset == FOLDER:
        channels, image_size, mean, std = folder_statistics(args)
    else:
        channels, image_size, (mean, std) = 1, (28, 28), DATASETS[args.dataset][1]
    train_transform, test_transform, ten_crop_size = build_transforms(args, channels, mean, std, image_size)
    train, train_plain, test, num_classes = load_datasets(args, train_transform, test_transform)
    root = getattr(train, "root", args.data_dir)
    if args.limit_train:
        keep = np.arange(min(args.limit_train, len(train)))
        train, train_plain = Subset(train, keep), Subset(train_plain, keep)
    if args.limit_test:
        test = Subset(test, np.arange(min(args.limit_test, len(test))))
    val = None
    if args.val_split:
        if args.val_split >= len(train):
            raise SystemExit(f"--val-split {args.val_split} leaves no training images (there are {len(train)})")
        # Its own generator: the split is the same for every run with this --seed, whatever else draws.
        order = np.random.default_rng(args.seed).permutation(len(train))
        val = Subset(train_plain, np.sort(order[:args.val_split]))  # evaluated like the test set
        train = Subset(train, np.sort(order[args.val_split:]))
    # An empty set would only show up as a division by zero at the end of the first epoch.
    for split, dataset in (("training", train), ("test", test)):
        if len(dataset) == 0:
            raise ValueError(f"the {split} set is empty: {args.dataset} in {root!r} has 0 {split} images")
    workers = {"num_workers": args.num_workers}
    if args.distributed:
        # This rank's share of each global batch, from one shuffle of (--seed, epoch) shared by all ranks;
        # it evaluates every world_size-th image and the counts are summed over the ranks.
        rank, world_size = dist.get_rank(), dist.get_world_size()
        train_loader = DataLoader(train, args.batch_size // world_size, shuffle=True, device=args.device,
                                  shard=(rank, world_size), seed=args.seed, **workers)
        val, test = (None if part is None else Subset(part, np.arange(rank, len(part), world_size))
                     for part in (val, test))
    else:
        train_loader = DataLoader(train, args.batch_size, shuffle=True, drop_last=False, device=args.device, **workers)
    loaders = (train_loader,
               None if val is None else DataLoader(val, 500, device=args.device, **workers),
               DataLoader(test, 500, device=args.device, **workers))
    return loaders, num_classes, channels, ten_crop_size


def build_model(args, num_classes, channels):
    if args.model == "alexnet":
        # The single-tower net for 227x227 input, without LRN, on one channel for digits.
        model = models.alexnet(num_classes=num_classes, in_channels=channels, groups=1, lrn=False, init=args.init)
    else:
        model = models.alexnet_mnist(num_classes=num_classes, in_channels=channels, init=args.init)
    return model.to(args.device)


def build_optimizer(args, model):
    if args.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                     weight_decay=args.weight_decay, nesterov=args.nesterov)


def build_scheduler(args, optimizer, steps_per_epoch):
    if args.scheduler == "cosine":  # stepped once a batch, down to 0 at the last one
        return optim.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    if args.scheduler == "step":
        return optim.StepLR(optimizer, args.step_size, args.gamma)
    if args.scheduler == "plateau":
        return optim.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=1)
    return None


def progress_wanted(args, stdout=None, stderr=None):
    """Whether to draw the progress bar: not with --no-progress, and only on a terminal.

    A bar redrawn with carriage returns turns a log file (or a pipe to tee) into one long garbled
    line, so it is drawn only when stdout, where the epoch lines go, is a terminal, and stderr too,
    where tqdm draws it.
    """
    streams = (sys.stdout if stdout is None else stdout, sys.stderr if stderr is None else stderr)
    return not args.no_progress and all(getattr(stream, "isatty", lambda: False)() for stream in streams)


class Progress:
    """tqdm when it is installed, else a line every few seconds."""

    def __init__(self, total, description, enabled):
        self.total, self.description, self.enabled = total, description, enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm  # noqa: PLC0415 - optional
                self.bar = tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)
            except ImportError:
                pass
        self.count, self.last_print = 0, time.perf_counter()

    def update(self, **values):
        self.count += 1
        text = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.enabled and time.perf_counter() - self.last_print > 5:
            print(f"  {self.description} {self.count}/{self.total} {text}", flush=True)
            self.last_print = time.perf_counter()

    def close(self):
        if self.bar is not None:
            self.bar.close()


class NonFiniteLoss(RuntimeError):
    pass


def train_one_epoch(model, optimizer, loader, epoch, show_progress, warmup_steps=0, batch_scheduler=None,
                    distributed=False, scaler=None):
    """One pass over the training set.

    The first ``warmup_steps`` steps of the run scale the scheduled rate up
    linearly; ``batch_scheduler`` (cosine) steps after every batch, the other
    schedulers once an epoch in ``main``. Returns the mean training loss and
    the rates of the epoch's first and last steps, as used (warm-up included).
    With ``distributed`` each step's loss is averaged over the ranks before it
    is checked, so every rank stops at the same step or none does (a rank
    that stopped alone would leave the others waiting in the all-reduce).
    An enabled ``scaler`` (--amp) runs the forward pass under autocast and
    scales the loss; its step is skipped when a gradient overflowed.
    """
    scaler = scaler if scaler is not None else amp.GradScaler(enabled=False)  # disabled: the plain step
    model.train()
    total_loss, total_seen, start = 0.0, 0, time.perf_counter()
    rates_used = []
    progress = Progress(len(loader), f"epoch {epoch}", show_progress)
    steps_before = (epoch - 1) * len(loader)
    try:
        for step, (images, labels) in enumerate(loader, 1):
            scheduled_lrs = [group["lr"] for group in optimizer.param_groups]
            if steps_before + step <= warmup_steps:
                # Linear warm-up: big early steps can silence the ReLUs of a net without normalisation.
                for group, lr in zip(optimizer.param_groups, scheduled_lrs):
                    group["lr"] = lr * (steps_before + step) / warmup_steps
            try:
                with amp.autocast(enabled=scaler.is_enabled()):
                    logits = model(ma.Tensor(images))
                    loss = F.cross_entropy(logits, labels)  # float32 under autocast
                loss_value = loss.item()
                if distributed:  # the global batch's loss: every rank sees the same value
                    loss_value = float(dist.all_reduce(np.array([loss_value]))[0]) / dist.get_world_size()
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(f"the training loss became {loss_value} at epoch {epoch}, step {step}")
                optimizer.zero_grad()
                # Under --amp a float16 gradient may overflow: the scaler sees the inf and skips the step,
                # so NumPy's overflow warnings would only repeat what it handles.
                with np.errstate(over="ignore", invalid="ignore") if scaler.is_enabled() else contextlib.nullcontext():
                    scaler.scale(loss).backward()
                rates_used.append(optimizer.param_groups[0]["lr"])
                scaler.step(optimizer)  # unscales; skipped if a gradient is inf or NaN
                scaler.update()
            finally:
                for group, lr in zip(optimizer.param_groups, scheduled_lrs):
                    group["lr"] = lr  # the schedulers step from the scheduled rate, warm-up or not
            if batch_scheduler is not None:
                batch_scheduler.step()
            batch_images = len(labels) * (dist.get_world_size() if distributed else 1)
            total_loss += loss_value * batch_images
            total_seen += batch_images
            rate = total_seen / (time.perf_counter() - start)
            progress.update(loss=f"{loss_value:.4f}", img_per_s=f"{rate:.0f}")
    finally:
        progress.close()
    return total_loss / total_seen, rates_used[0], rates_used[-1]


def evaluate(model, loader, ten_crop_size=None, distributed=False, mixed_precision=False):
    """Mean cross-entropy and accuracy; with ``ten_crop_size``, of the ten crops' averaged softmax.

    With ``distributed`` each rank tests its own share of the images and the
    sums (loss, correct, seen) are added over the ranks: every rank returns
    the figures of the whole set. With ``mixed_precision`` the forward passes
    run under autocast, as in training.
    """
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with ma.no_grad(), amp.autocast(enabled=mixed_precision):
        for images, labels in loader:
            if ten_crop_size is None:
                logits = model(ma.Tensor(images))
                total_loss += F.cross_entropy(logits, labels).item() * len(labels)
                predictions = logits.data.argmax(axis=1)
            else:  # the mean of the ten crops' probabilities, as the paper tested
                probabilities = ten_crop_predict(model, images, ten_crop_size).data
                xp = backend.get_array_module(probabilities)
                picked = probabilities[xp.arange(len(labels)), labels]
                total_loss -= float(xp.log(xp.maximum(picked, xp.finfo(picked.dtype).tiny)).sum())
                predictions = probabilities.argmax(axis=1)
            correct += int((predictions == labels).sum())
            seen += len(labels)
    if distributed:
        total_loss, correct, seen = dist.all_reduce(np.array([total_loss, correct, seen], dtype=np.float64))
    return total_loss / seen, correct / seen


def write_metrics(out_dir, history, title=None):
    """metrics.json and metrics.csv, and curves.png when matplotlib is installed."""
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "metrics.json"), "w") as file:
        json.dump(history, file, indent=2)
    with atomic_write(os.path.join(out_dir, "metrics.csv"), "w") as file:
        # Every column of every row: rows from a checkpoint of an older version may lack one (left empty).
        columns = list(dict.fromkeys(key for row in history for key in row))
        writer = csv.DictWriter(file, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)
    if importlib.util.find_spec("matplotlib") is None:  # the optional 'plot' extra: the numbers suffice
        return
    figure = curves_figure(history, title)
    with atomic_write(os.path.join(out_dir, "curves.png")) as file:
        figure.savefig(file, format="png", dpi=100)


def run_title(args):
    """What ran, for the plots: "alexnet-mnist on mnist, sgd, step schedule"."""
    schedule = "constant rate" if args.scheduler == "none" else f"{args.scheduler} schedule"
    return f"{args.model} on {args.dataset}, {args.optimizer}, {schedule}"


def curves_figure(history, title=None):
    """The loss and accuracy curves of ``history`` as a matplotlib Figure: losses left, accuracies right.

    Made with matplotlib's Figure, not pyplot: no window, no global backend switched, nothing left open.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415 - the optional 'plot' extra
    from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: PLC0415

    figure = Figure(figsize=(10, 4.4))
    left, right = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    validated = [row for row in history if "val_loss" in row]
    left.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    if validated:
        left.plot([row["epoch"] for row in validated], [row["val_loss"] for row in validated], "o-", label="validation")
        right.plot([row["epoch"] for row in validated], [100 * row["val_accuracy"] for row in validated], "o-",
                   label="validation")
    left.plot(epochs, [row["test_loss"] for row in history], "o-", label="test")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    right.plot(epochs, [100 * row["test_accuracy"] for row in history], "o-", label="test")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    # No accuracy above 100% exists: the axis stops there. Its bottom follows the lowest point, with a
    # margin of 5% of the range shown (at least 99% to 100%, when every point is at 100%).
    lowest = min([100 * row["test_accuracy"] for row in history] + [100 * row["val_accuracy"] for row in validated])
    right.set_ylim(max(0.0, min(lowest - 0.05 * (100 - lowest), 99.0)), 100.0)
    right.yaxis.set_major_formatter(PercentFormatter(xmax=100))
    for axes in (left, right):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no "2.5" ticks
        axes.legend()
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def first_conv_layer(model):
    """(name, layer) of the model's first Conv2d: conv1."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no Conv2d layer to draw")


def first_test_image(test_dataset, ten_crop_size=None):
    """The first test image as the model sees it: normalised; with --ten-crop, the centre crop of the
    padded or enlarged test image (the ten-crop views are cut from it)."""
    images, _ = test_dataset.get_batch(np.array([0]))
    if ten_crop_size is not None:
        images = CenterCrop(ten_crop_size)(images)
    return images[0]


def write_plots(args, model, test_dataset, ten_crop_size, epoch):
    """--plots: the first convolution's kernels and every layer's output for the first test image."""
    from minialex import viz  # noqa: PLC0415 - draws with matplotlib (checked by parse_args)

    name, conv1 = first_conv_layer(model)
    caption = f"{args.model} on {args.dataset} after epoch {epoch}"
    filters = viz.plot_filters(conv1.weight, os.path.join(args.out_dir, FILTERS_PLOT),
                               title=f"conv1 ({name}) of {caption}")
    maps = viz.plot_feature_maps(model, first_test_image(test_dataset, ten_crop_size),
                                 os.path.join(args.out_dir, FEATURE_MAPS_PLOT), title=f"{caption}, first test image")
    print(f"wrote {filters} and {maps}", flush=True)


def describe_rates(first_lr, last_lr):
    return f"lr {first_lr:g}" if first_lr == last_lr else f"lr {first_lr:g} to {last_lr:g}"


def on_rank_zero(args, work):
    """``work()`` run by rank 0 alone, its result (JSON-able) handed to every rank.

    A SystemExit on rank 0 (a missing checkpoint, an unwritable folder) stops
    every rank with the same message; the others must not wait for it in a
    collective. Without --distributed this is just ``work()``.
    """
    if not args.distributed:
        return work()
    outcome = None
    if dist.get_rank() == 0:
        try:
            outcome = {"result": work()}
        except SystemExit as error:
            outcome = {"exit": error.code if isinstance(error.code, int | None) else str(error.code)}
    outcome = dist.broadcast_object(outcome)
    if "exit" in outcome:
        raise EveryRankExit(outcome["exit"])
    return outcome["result"]


def epoch_seed(seed, rank, epoch):
    """The engine seed of one rank's epoch: dropout masks and augmentation differ per rank, and a resumed
    run draws the same numbers as one that was never stopped."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def start_distributed(args):
    """Join the process group; put this rank on its GPU; check that the batch splits over the ranks."""
    dist.init_process_group(args.dist_backend)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.device.strip().lower().startswith("cuda"):
        args.device = f"cuda:{dist.get_local_rank()}"  # one GPU per process
    if args.batch_size % world_size:
        raise EveryRankExit(f"--batch-size {args.batch_size} is the global batch: it must split evenly over the "
                            f"{world_size} ranks")
    return rank, world_size


def load_on_rank_zero(args, model, optimizer, scheduler, scaler=None):
    """Rank 0 reads the checkpoint (the only rank that needs the file) and sends its state to the others.

    ``scaler`` is restored when given: pass it only for a checkpoint that holds one.
    """
    def load():
        meta = load_checkpoint(args.checkpoint, model, optimizer, scheduler, restore_rng=not args.distributed,
                               scaler=scaler)
        return {"epoch": meta["epoch"], "history": meta["history"]}

    meta = on_rank_zero(args, load)
    if args.distributed:
        dist.broadcast_parameters(model)
        if optimizer is not None:
            dist.broadcast_optimizer_state(optimizer)
        if scheduler is not None:
            scheduler.load_state_dict(dist.broadcast_object(scheduler.state_dict()))
        if scaler is not None:
            scaler.load_state_dict(dist.broadcast_object(scaler.state_dict()))
    return meta


def main(argv=None):
    args = parse_args(argv)
    rank, world_size = start_distributed(args) if args.distributed else (0, 1)
    is_main = rank == 0

    def prepare_folders():
        # Before any training: a folder we cannot write would otherwise fail only at the first save.
        check_writable(args.out_dir, "--out-dir")
        check_writable(os.path.dirname(os.path.abspath(args.checkpoint)), "--checkpoint's folder")
        remove_stale_temporaries(args)
        if not (args.resume or args.evaluate):
            return None
        if not os.path.exists(args.checkpoint):
            raise SystemExit(f"--{'resume' if args.resume else 'evaluate'}: no checkpoint at {args.checkpoint}")
        return read_checkpoint_record(args.checkpoint)

    record = on_rank_zero(args, prepare_folders)
    if record is not None:
        check_resume_options(args, record)  # before anything is built from args
        stored_world = record.get("args", {}).get("world_size")
        if args.distributed and stored_world not in (None, world_size):
            print(f"note: the checkpoint was trained on {stored_world} ranks, this run has {world_size}; "
                  "the global batch stays --batch-size, the order of the images changes")

    if args.scheduler == "plateau" and args.val_split == 0:  # checked once a resumed run has its settings
        raise EveryRankExit("--scheduler plateau decides on a validation loss: give --val-split N "
                            "(the test set is never used for a decision)")
    args.world_size = world_size
    ma.manual_seed(args.seed)  # the same initial weights on every rank
    (train_loader, val_loader, test_loader), num_classes, channels, ten_crop_size = build_data(args)
    model = build_model(args, num_classes, channels)
    distributed = args.distributed
    if distributed:
        dist.broadcast_parameters(model)  # identical already (same seed); this makes it so whatever the init
    if args.evaluate:
        meta = load_on_rank_zero(args, model, None, None)
        test_loss, test_accuracy = evaluate(model, test_loader, ten_crop_size, distributed, args.amp)
        if args.plots and is_main:
            write_plots(args, model, test_loader.dataset, ten_crop_size, meta["epoch"])
        views = "ten crops" if ten_crop_size else "one view"
        print(f"{args.checkpoint} after epoch {meta['epoch']}, {views} of each test image: test loss {test_loss:.4f}")
        print(f"test accuracy: {100 * test_accuracy:.2f}%")
        return 0
    optimizer = build_optimizer(args, model)
    if distributed:
        optimizer = dist.DistributedOptimizer(optimizer)  # gradients averaged over the ranks before each step
    scheduler = build_scheduler(args, optimizer, len(train_loader))
    scaler = amp.GradScaler(enabled=args.amp)  # disabled without --amp: a plain step
    batch_scheduler = scheduler if isinstance(scheduler, optim.CosineAnnealingLR) else None
    history, first_epoch, last_good_epoch = [], 1, None
    if args.resume:
        # A checkpoint from a run without --amp (or from before it existed) holds no scaler: a fresh one starts.
        saved_scaler = scaler if args.amp and "grad_scaler" in record else None
        meta = load_on_rank_zero(args, model, optimizer, scheduler, saved_scaler)
        if args.amp and saved_scaler is None:
            print(f"note: the checkpoint holds no loss scaler (it was trained without --amp); mixed precision "
                  f"starts here with the scale at {scaler.get_scale():g}")
        history, first_epoch = meta["history"], meta["epoch"] + 1
        last_good_epoch = meta["epoch"]
        print(f"resumed from {args.checkpoint} after epoch {meta['epoch']}")
        if history and is_main:
            # A run killed while writing its metrics would otherwise never get them back
            # (a finished run trains no more epochs, so nothing else rewrites them).
            write_metrics(args.out_dir, history, run_title(args))
        if batch_scheduler is not None and batch_scheduler.T_max != args.epochs * len(train_loader):
            # The cosine was planned for the first run's length; re-planning it would jump the rate.
            planned = batch_scheduler.T_max / len(train_loader)
            print(f"warning: the checkpoint's cosine schedule spans {batch_scheduler.T_max} steps "
                  f"({planned:g} epoch{'s' if planned != 1 else ''}), not --epochs {args.epochs}; it is kept, "
                  "so the rate rises again after that", file=sys.stderr)
    if not hasattr(args, "warmup_steps_used"):  # a resumed run keeps the warm-up it was planned with
        args.warmup_steps_used = plan_warmup(args, len(train_loader))

    held_out = f"{len(val_loader.dataset)} validation images, " if val_loader is not None else ""
    test_images = len(test_loader.dataset.dataset) if distributed else len(test_loader.dataset)
    if distributed:
        held_out = f"{len(val_loader.dataset.dataset)} validation images, " if val_loader is not None else ""
    ranks = (f", {world_size} rank{'s' if world_size != 1 else ''} of {args.batch_size // world_size} images "
             f"a step ({args.dist_backend})" if distributed else "")
    print(f"{args.model} on {args.dataset}: {len(train_loader.dataset)} training images, {held_out}"
          f"{test_images} test images, {args.optimizer}, device {args.device}{ranks}", flush=True)
    for epoch in range(first_epoch, args.epochs + 1):
        start = time.perf_counter()
        if distributed:
            train_loader.set_epoch(epoch)  # the same new shuffle on every rank
            ma.manual_seed(epoch_seed(args.seed, rank, epoch))
        try:
            train_loss, first_lr, last_lr = train_one_epoch(model, optimizer, train_loader, epoch,
                                                            is_main and progress_wanted(args),
                                                            args.warmup_steps_used, batch_scheduler, distributed,
                                                            scaler)
        except NonFiniteLoss as error:
            print(f"stopping: {error}; {describe_checkpoint(args.checkpoint, last_good_epoch)}. "
                  "Try a smaller --lr.", file=sys.stderr)
            return 2
        val_loss, val_accuracy = (evaluate(model, val_loader, distributed=distributed, mixed_precision=args.amp)
                                  if val_loader is not None else (None, None))
        test_loss, test_accuracy = evaluate(model, test_loader, ten_crop_size, distributed, args.amp)  # reported only
        seconds = time.perf_counter() - start
        # The last step of an epoch can blow the weights up although its loss (taken before the
        # step) was finite: check before this model may replace the last good checkpoint.
        # (Every rank holds the same weights and the same all-reduced losses: the same verdict.)
        problem = (non_finite_problem(test_loss, model) if val_loss is None
                   else non_finite_problem(val_loss, model, "validation"))
        if problem is not None:
            print(f"stopping: {problem} at the end of epoch {epoch}; it was not saved, "
                  f"{describe_checkpoint(args.checkpoint, last_good_epoch)}. Try a smaller --lr.", file=sys.stderr)
            return 2
        if isinstance(scheduler, optim.ReduceLROnPlateau):
            scheduler.step(val_loss)  # the paper's rule, on held-out training images
        elif scheduler is not None and scheduler is not batch_scheduler:
            scheduler.step()
        row = {"epoch": epoch, "lr": first_lr, "last_lr": last_lr, "train_loss": train_loss}
        if val_loss is not None:
            row.update(val_loss=val_loss, val_accuracy=val_accuracy)
        row.update(test_loss=test_loss, test_accuracy=test_accuracy, seconds=round(seconds, 2))
        if args.amp:
            row["loss_scale"] = scaler.get_scale()
        history.append(row)
        validation = f"val loss {val_loss:.4f}, val accuracy {100 * val_accuracy:.2f}%, " if val_loss is not None else ""
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}, {validation}test loss {test_loss:.4f}, "
              f"test accuracy {100 * test_accuracy:.2f}%, {describe_rates(first_lr, last_lr)}, {seconds:.1f} s",
              flush=True)
        if is_main:
            save_checkpoint(args.checkpoint, model, optimizer, scheduler, scaler if args.amp else None,
                            epoch=epoch, history=history,
                            args={k: v for k, v in vars(args).items() if k != "given"})
            write_metrics(args.out_dir, history, run_title(args))
        last_good_epoch = epoch
    if first_epoch > args.epochs:
        print(f"nothing to do: the checkpoint is already at epoch {first_epoch - 1} of {args.epochs}")
    if not history:
        return 0
    if args.plots and is_main:  # of the model as trained (or as loaded, when there was nothing to do)
        write_plots(args, model, test_loader.dataset, ten_crop_size, history[-1]["epoch"])
    if "val_accuracy" in history[-1]:
        best = max(history, key=lambda row: row.get("val_accuracy", -1.0))
        print(f"best validation accuracy: {100 * best['val_accuracy']:.2f}% after epoch {best['epoch']} "
              f"(test accuracy then {100 * best['test_accuracy']:.2f}%)")
    print(f"test accuracy: {100 * history[-1]['test_accuracy']:.2f}%")
    return 0


def describe_checkpoint(path, epoch):
    if epoch is None:
        return "this run saved no checkpoint"
    return f"the last good checkpoint is {path} (epoch {epoch})"


def run_as_script(argv=None):
    """``main`` as a command: under --distributed, stdout and stderr of ranks other than 0 are silenced
    (rank 0 says everything once), and a rank that fails stops every rank (MPI abort) instead of leaving
    the others waiting in a collective. A refusal that every rank reaches together (``EveryRankExit``)
    ends the ranks normally: nobody waits, and rank 0's message reaches the user intact."""
    argv = sys.argv[1:] if argv is None else argv
    if not parse_args(argv).distributed:
        return main(argv)
    quiet = open(os.devnull, "w") if dist_rank_from_environment() > 0 else None  # noqa: SIM115 - for the whole run
    every_rank = False  # set where a refusal is caught
    try:
        if quiet is None:
            code = main(argv)
        else:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                code = main(argv)
    except SystemExit as error:
        code, every_rank = error.code, isinstance(error, EveryRankExit)
        if isinstance(code, str):
            if quiet is None:
                print(code, file=sys.stderr, flush=True)
            code = 1
    except BaseException:
        print(f"rank {dist.get_rank()}: {traceback.format_exc()}", file=sys.stderr, flush=True)
        code, every_rank = 1, False
    if code and not every_rank:
        dist.abort(code)  # the other ranks may be waiting for this one
    if dist.is_initialized():
        dist.destroy_process_group()
    return code


def dist_rank_from_environment():
    """This process's MPI rank as the launcher announced it (before MPI starts): MPICH, Open MPI, Slurm."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


if __name__ == "__main__":
    sys.exit(run_as_script())
