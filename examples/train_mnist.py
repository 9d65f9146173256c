"""Train AlexNet on MNIST (or Fashion-MNIST) with minialex.

    python examples/train_mnist.py --data-dir ../shared/data/mnist
    python examples/train_mnist.py --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist
    python examples/train_mnist.py --model alexnet --device cuda --epochs 1     # the 227x227 net, on a GPU

Every epoch prints train loss, test loss, test accuracy and wall time, writes
the metrics to <out-dir>/metrics.json and .csv (plus curves.png when
matplotlib is installed) and saves a checkpoint (model, optimiser, scheduler,
RNG, epoch) atomically. ``--resume`` continues from it and ends with the same
parameters as a run that was never interrupted.
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

import minialex as ma
import minialex.functional as F
from minialex import models, optim
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.data import MNIST, Compose, DataLoader, FashionMNIST, Normalize, RandomShiftCrop, Resize, Subset, ToFloat
from minialex.io import atomic_write

DATASETS = {"mnist": (MNIST, Normalize.MNIST), "fashion-mnist": (FashionMNIST, Normalize.FASHION_MNIST)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four .gz files; default: the download cache ($MINIALEX_DATA or ~/.cache/minialex)")
    parser.add_argument("--model", choices=["alexnet-mnist", "alexnet"], default="alexnet-mnist",
                        help="alexnet-mnist: the 28x28 net (CPU, minutes); alexnet: the 227x227 single-tower net (GPU)")
    parser.add_argument("--init", choices=list(models.INITIALISATIONS), default="kaiming",
                        help="weight initialisation (He's 'kaiming' starts learning soonest)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--nesterov", action="store_true")
    parser.add_argument("--scheduler", choices=["none", "step", "plateau", "cosine"], default=None,
                        help="default: step for alexnet-mnist, cosine for alexnet (made for one-epoch GPU runs); "
                             "step: multiply the rate by --gamma every --step-size epochs; "
                             "plateau: divide by 10 when the test loss stalls (the paper's rule); "
                             "cosine: lower it every batch along half a cosine, to 0 at the end of the run")
    parser.add_argument("--step-size", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=300,
                        help="raise the rate linearly from 0 over the first N steps (0: none); without it the "
                             "unnormalised 8-layer net sometimes never leaves chance level")
    parser.add_argument("--shift", type=int, default=0, help="random shift augmentation, in pixels (0: none)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (default: <out-dir>/checkpoint.npz)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--out-dir", default=None, help="metrics and plots (default: runs/<dataset>-<model>)")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N images only")
    parser.add_argument("--limit-test", type=int, default=None, metavar="N", help="test on the first N images only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    for name in ("limit_train", "limit_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    args.scheduler = args.scheduler or ("cosine" if args.model == "alexnet" else "step")
    args.out_dir = args.out_dir or os.path.join("runs", f"{args.dataset}-{args.model}")
    args.checkpoint = args.checkpoint or os.path.join(args.out_dir, "checkpoint.npz")
    return args


def build_data(args):
    dataset_class, (mean, std) = DATASETS[args.dataset]
    common = [ToFloat(), Normalize(mean, std)]
    if args.model == "alexnet":
        common.append(Resize(227))  # the seed tutorial's 227x227 input
    train_transform = Compose(([RandomShiftCrop(args.shift)] if args.shift else []) + common)
    train = dataset_class(args.data_dir, train=True, transform=train_transform)
    test = dataset_class(args.data_dir, train=False, transform=Compose(common))
    if args.limit_train:
        train = Subset(train, np.arange(min(args.limit_train, len(train))))
    if args.limit_test:
        test = Subset(test, np.arange(min(args.limit_test, len(test))))
    return (DataLoader(train, args.batch_size, shuffle=True, drop_last=False, device=args.device),
            DataLoader(test, 500, device=args.device))


def build_model(args):
    if args.model == "alexnet":
        # The seed tutorial's tf.keras AlexNet: single tower, no LRN, one input channel.
        model = models.alexnet(num_classes=10, in_channels=1, groups=1, lrn=False, init=args.init)
    else:
        model = models.alexnet_mnist(num_classes=10, in_channels=1, init=args.init)
    return model.to(args.device)


def build_scheduler(args, optimizer, steps_per_epoch):
    if args.scheduler == "cosine":  # stepped once a batch, down to 0 at the last one
        return optim.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    if args.scheduler == "step":
        return optim.StepLR(optimizer, args.step_size, args.gamma)
    if args.scheduler == "plateau":
        return optim.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=1)
    return None


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


def train_one_epoch(model, optimizer, loader, epoch, show_progress, warmup_steps=0, batch_scheduler=None):
    """One pass over the training set.

    The first ``warmup_steps`` steps of the run scale the scheduled rate up
    linearly; ``batch_scheduler`` (cosine) steps after every batch, the other
    schedulers once an epoch in ``main``.
    """
    model.train()
    total_loss, total_seen, start = 0.0, 0, time.perf_counter()
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
                logits = model(ma.Tensor(images))
                loss = F.cross_entropy(logits, labels)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise NonFiniteLoss(f"the training loss became {loss_value} at epoch {epoch}, step {step}")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            finally:
                for group, lr in zip(optimizer.param_groups, scheduled_lrs):
                    group["lr"] = lr  # the schedulers step from the scheduled rate, warm-up or not
            if batch_scheduler is not None:
                batch_scheduler.step()
            total_loss += loss_value * len(labels)
            total_seen += len(labels)
            rate = total_seen / (time.perf_counter() - start)
            progress.update(loss=f"{loss_value:.4f}", img_per_s=f"{rate:.0f}")
    finally:
        progress.close()
    return total_loss / total_seen


def evaluate(model, loader):
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with ma.no_grad():
        for images, labels in loader:
            logits = model(ma.Tensor(images))
            total_loss += F.cross_entropy(logits, labels).item() * len(labels)
            predictions = logits.data.argmax(axis=1)
            correct += int((predictions == labels).sum())
            seen += len(labels)
    return total_loss / seen, correct / seen


def write_metrics(out_dir, history):
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "metrics.json"), "w") as file:
        json.dump(history, file, indent=2)
    with atomic_write(os.path.join(out_dir, "metrics.csv"), "w") as file:
        writer = csv.DictWriter(file, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    try:
        import matplotlib  # noqa: PLC0415 - the optional 'plot' extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return
    epochs = [row["epoch"] for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    left.plot(epochs, [row["test_loss"] for row in history], "o-", label="test")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    left.legend()
    right.plot(epochs, [100 * row["test_accuracy"] for row in history], "o-")
    right.set(xlabel="epoch", ylabel="%", title="test accuracy")
    figure.tight_layout()
    with atomic_write(os.path.join(out_dir, "curves.png")) as file:
        figure.savefig(file, format="png", dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    ma.manual_seed(args.seed)
    train_loader, test_loader = build_data(args)
    model = build_model(args)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, nesterov=args.nesterov)
    scheduler = build_scheduler(args, optimizer, len(train_loader))
    batch_scheduler = scheduler if isinstance(scheduler, optim.CosineAnnealingLR) else None
    history, first_epoch = [], 1
    if args.resume:
        if not os.path.exists(args.checkpoint):
            raise SystemExit(f"--resume: no checkpoint at {args.checkpoint}")
        meta = load_checkpoint(args.checkpoint, model, optimizer, scheduler)
        history, first_epoch = meta["history"], meta["epoch"] + 1
        print(f"resumed from {args.checkpoint} after epoch {meta['epoch']}")
        if batch_scheduler is not None and batch_scheduler.T_max != args.epochs * len(train_loader):
            # The cosine was planned for the first run's length; re-planning it would jump the rate.
            planned = batch_scheduler.T_max / len(train_loader)
            print(f"warning: the checkpoint's cosine schedule spans {batch_scheduler.T_max} steps "
                  f"({planned:g} epoch{'s' if planned != 1 else ''}), not --epochs {args.epochs}; it is kept, "
                  "so the rate rises again after that", file=sys.stderr)

    print(f"{args.model} on {args.dataset}: {len(train_loader.dataset)} training images, "
          f"{len(test_loader.dataset)} test images, device {args.device}", flush=True)
    for epoch in range(first_epoch, args.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch starts at (cosine lowers it as it goes)
        try:
            train_loss = train_one_epoch(model, optimizer, train_loader, epoch, not args.no_progress,
                                         args.warmup_steps, batch_scheduler)
        except NonFiniteLoss as error:
            kept = f"the last good checkpoint is {args.checkpoint}" if os.path.exists(args.checkpoint) else "no checkpoint was written yet"
            print(f"stopping: {error}; {kept}. Try a smaller --lr.", file=sys.stderr)
            return 2
        test_loss, test_accuracy = evaluate(model, test_loader)
        seconds = time.perf_counter() - start
        if isinstance(scheduler, optim.ReduceLROnPlateau):
            scheduler.step(test_loss)
        elif scheduler is not None and scheduler is not batch_scheduler:
            scheduler.step()
        history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "test_loss": test_loss,
                        "test_accuracy": test_accuracy, "seconds": round(seconds, 2)})
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {100 * test_accuracy:.2f}%, lr {lr:g}, {seconds:.1f} s", flush=True)
        save_checkpoint(args.checkpoint, model, optimizer, scheduler, epoch=epoch, history=history,
                        args={k: v for k, v in vars(args).items()})
        write_metrics(args.out_dir, history)
    if not history:
        print(f"nothing to do: the checkpoint is already at epoch {first_epoch - 1} of {args.epochs}")
        return 0
    print(f"test accuracy: {100 * history[-1]['test_accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
