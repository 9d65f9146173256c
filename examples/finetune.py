"""Fine-tune a trained AlexNet on a new task: new classifier head, early layers frozen.

    # a net trained on MNIST by train_mnist.py, its convolutions frozen, retrained on Fashion-MNIST:
    python examples/finetune.py --checkpoint runs/mnist-alexnet-mnist/checkpoint.npz \
        --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist --freeze features --epochs 1
    # the same steps from scratch, for comparison:
    python examples/finetune.py --from-scratch --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist --epochs 1
    # torchvision's ImageNet AlexNet on your own images (folders train/<class>/*, test/<class>/*):
    python examples/finetune.py --model alexnet-torchvision --weights alexnet_torchvision.npz \
        --dataset folder --data-dir my_images --freeze features

The starting weights are a minialex checkpoint (``--checkpoint``, written by
train_mnist.py) or a plain ``.npz`` of parameter arrays (``--weights``), for
example torchvision's AlexNet converted once where PyTorch is installed:

    python -c "import torch, numpy as np; state = torch.load('alexnet-owt-7be5be79.pth', map_location='cpu'); np.savez('alexnet_torchvision.npz', **{k: v.numpy() for k, v in state.items()})"

(torchvision's parameter names, features.N.* and classifier.N.*, are minialex's
too). The last Linear layer is replaced by a new one for the new classes;
``--freeze`` switches ``requires_grad`` off for the named parameters (prefixes,
e.g. ``features`` or ``features.0,features.4``), so backward stops before them
and the optimiser only gets the rest. Metrics go to <out-dir>/metrics.json.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import minialex as ma
from minialex import models, nn, optim
from minialex.data import Compose, DataLoader, Normalize, Resize, Subset, ToFloat
from minialex.io import atomic_write

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_mnist  # noqa: E402 - the data, training and evaluation loops are shared with it

# torchvision's normalisation for its ImageNet weights (RGB, on the [0, 1] scale).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--checkpoint", help="a minialex checkpoint (.npz) written by train_mnist.py")
    start.add_argument("--weights", help="a .npz of parameter arrays named as the model's (e.g. converted torchvision weights)")
    start.add_argument("--from-scratch", action="store_true", help="no starting weights: the baseline to compare with")
    parser.add_argument("--model", choices=["alexnet-mnist", "alexnet-torchvision"], default="alexnet-mnist")
    parser.add_argument("--dataset", choices=sorted(train_mnist.DATASETS) + [train_mnist.FOLDER], default="fashion-mnist")
    parser.add_argument("--data-dir", default=None, help="as train_mnist.py's --data-dir")
    parser.add_argument("--freeze", default="features",
                        help="comma-separated parameter-name prefixes to freeze ('none': train everything)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up of the rate, as train_mnist.py")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N")
    parser.add_argument("--limit-test", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", default=None, help="default: runs/finetune-<dataset>-<model>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    if args.dataset == train_mnist.FOLDER and args.data_dir is None:
        parser.error("--dataset folder needs --data-dir (a folder with train/ and test/ class folders)")
    if args.model == "alexnet-torchvision" and args.dataset != train_mnist.FOLDER:
        parser.error("--model alexnet-torchvision takes colour images: use --dataset folder")
    args.freeze = [] if args.freeze.strip().lower() == "none" else [p.strip() for p in args.freeze.split(",") if p.strip()]
    args.out_dir = args.out_dir or os.path.join("runs", f"finetune-{args.dataset}-{args.model}")
    return args


def load_weights(path, from_checkpoint):
    """Parameter name -> array from a checkpoint's model/ entries or from a plain .npz (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if from_checkpoint:
                weights = {key[len("model/"):]: archive[key] for key in archive.files if key.startswith("model/")}
            else:
                weights = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path} is not a readable .npz file ({error})") from None
    if not weights:
        raise SystemExit(f"{path} holds no parameters" + (" (no model/ entries)" if from_checkpoint else ""))
    return weights


def build_source_model(args, weights, channels):
    """The model the weights were trained as (its own class count), with those weights loaded."""
    builder = models.alexnet_mnist if args.model == "alexnet-mnist" else models.alexnet_torchvision
    if weights is None:
        return builder(num_classes=10, in_channels=channels)
    head = max((name for name in weights if name.startswith("classifier.") and name.endswith(".weight")),
               key=lambda name: int(name.split(".")[1]), default=None)
    if head is None or "features.0.weight" not in weights:
        raise SystemExit(f"the weights have no features.0.weight / classifier.N.weight for {args.model}: "
                         f"found {sorted(weights)[:6]}...")
    source_classes, source_channels = weights[head].shape[0], weights["features.0.weight"].shape[1]
    if source_channels != channels:
        raise SystemExit(f"the weights take {source_channels}-channel images, the data has {channels} channel(s)")
    model = builder(num_classes=int(source_classes), in_channels=int(source_channels))
    model.load_state_dict(weights)  # names and shapes checked; nothing changes on a mismatch
    return model


def replace_head(model, num_classes):
    """A new, freshly initialised last Linear layer for ``num_classes`` classes."""
    name, old = list(model.classifier.named_children())[-1]
    if not isinstance(old, nn.Linear):
        raise SystemExit(f"the model's last classifier layer is {type(old).__name__}, not Linear")
    setattr(model.classifier, name, nn.Linear(old.weight.shape[1], num_classes))
    return f"classifier.{name}"


def freeze(model, prefixes):
    """Switch requires_grad off for every parameter whose name starts with a prefix; return their names."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name == prefix or name.startswith(prefix + ".") for name in names):
            raise SystemExit(f"--freeze {prefix!r} matches no parameter; the model has {names}")
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def build_torchvision_data(args):
    """Colour images from an ImageFolder tree, resized to 224x224 and normalised as for torchvision's weights."""
    from minialex.data import ImageFolder  # noqa: PLC0415 - needs Pillow (the vision extra)

    transform = Compose([ToFloat(), Normalize(IMAGENET_MEAN, IMAGENET_STD), Resize(224)])
    train, test = (ImageFolder(os.path.join(args.data_dir, split), transform=transform) for split in ("train", "test"))
    classes = len(train.classes)
    if args.limit_train:
        train = Subset(train, np.arange(min(args.limit_train, len(train))))
    if args.limit_test:
        test = Subset(test, np.arange(min(args.limit_test, len(test))))
    return (DataLoader(train, args.batch_size, shuffle=True, device=args.device),
            DataLoader(test, 50, device=args.device), classes)


def build_data(args):
    """(train loader, test loader, class count, channels)."""
    if args.model == "alexnet-torchvision":
        train, test, classes = build_torchvision_data(args)
        return train, test, classes, 3
    options = ["--dataset", args.dataset, "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               "--device", args.device, "--out-dir", args.out_dir]
    for flag, value in (("--data-dir", args.data_dir), ("--limit-train", args.limit_train),
                        ("--limit-test", args.limit_test)):
        if value is not None:
            options += [flag, str(value)]
    (train, _, test), classes, channels, _ = train_mnist.build_data(train_mnist.parse_args(options))
    return train, test, classes, channels


def main(argv=None):
    args = parse_args(argv)
    train_mnist.check_writable(args.out_dir, "--out-dir")
    ma.manual_seed(args.seed)
    train_loader, test_loader, num_classes, channels = build_data(args)
    weights = None if args.from_scratch else load_weights(args.checkpoint or args.weights, args.checkpoint is not None)
    model = build_source_model(args, weights, channels)
    head = replace_head(model, num_classes)
    frozen = freeze(model, args.freeze) if not args.from_scratch else []
    model.to(args.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.SGD(trainable, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    start_from = "scratch" if args.from_scratch else (args.checkpoint or args.weights)
    print(f"{args.model} from {start_from}: new head {head} for {num_classes} classes; "
          f"{len(frozen)} frozen parameter tensors, {sum(p.size for p in trainable):,} trainable values", flush=True)

    history = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_loss, first_lr, last_lr = train_mnist.train_one_epoch(model, optimizer, train_loader, epoch,
                                                                    not args.no_progress, args.warmup_steps)
        test_loss, test_accuracy = train_mnist.evaluate(model, test_loader)
        seconds = time.perf_counter() - start
        history.append({"epoch": epoch, "lr": first_lr, "last_lr": last_lr, "train_loss": train_loss,
                        "test_loss": test_loss, "test_accuracy": test_accuracy, "seconds": round(seconds, 2)})
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {100 * test_accuracy:.2f}%, {seconds:.1f} s", flush=True)
    record = {"start": start_from, "model": args.model, "dataset": args.dataset, "frozen": frozen,
              "steps": args.epochs * len(train_loader), "history": history}
    with atomic_write(os.path.join(args.out_dir, "metrics.json"), "w") as file:
        json.dump(record, file, indent=2)
    print(f"test accuracy: {100 * history[-1]['test_accuracy']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
