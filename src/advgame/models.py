"""Classifiers (defenders) and attacker networks, built by name."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from advgame import UserError, passes


class SmallCNN(nn.Module):
    """The MNIST SmallCNN of TRADES: conv 32-32-pool-64-64-pool, fc 200-200-10."""

    def __init__(self, in_channels: int = 1, classes: int = 10, side: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 64 * (((side - 4) // 2 - 4) // 2) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class CifarCNN(nn.Module):
    """A small VGG-style CNN for 32x32 colour images (conv 64-64-pool-128-128-pool, fc 256-256)."""

    def __init__(self, in_channels: int = 3, classes: int = 10, side: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * (side // 4) ** 2, 256), nn.ReLU(), nn.Linear(256, 256),
            nn.ReLU(), nn.Linear(256, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _resnet18(in_channels: int, classes: int, side: int) -> nn.Module:
    from torchvision.models import resnet18

    m = resnet18(num_classes=classes)
    m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


CLASSIFIERS = {"smallcnn": SmallCNN, "cifarcnn": CifarCNN, "resnet18": _resnet18}


def build_classifier(arch: str, in_channels: int = 1, classes: int = 10, side: int = 28) -> nn.Module:
    if arch not in CLASSIFIERS:
        raise UserError(f"classifier.arch: unknown '{arch}'; allowed values: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[arch](in_channels, classes, side)


# ---------------------------------------------------------------- attacker networks h(x; v)

class MLPAttacker(nn.Module):
    """The paper's attacker: three fully connected hidden layers of `hidden` units."""

    def __init__(self, shape: tuple[int, int, int], hidden: int = 300):
        super().__init__()
        self.shape = tuple(shape)
        d = shape[0] * shape[1] * shape[2]
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d),
        )

    def forward(self, x):
        return self.net(x).view(-1, *self.shape)


class GlobalContext(nn.Module):
    """Adds to a side x side feature map a map computed from the whole of it (an MLP bottleneck
    of `k` units): a perturbation that fools a classifier is a class-dependent pattern over the
    whole digit, which the small receptive field of the conv layers does not see, and a vector
    broadcast to every position cannot draw."""

    def __init__(self, channels: int, side: int, k: int = 64):
        super().__init__()
        s = (side + 1) // 2
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(channels * s * s, k), nn.ReLU(),
                                 nn.Linear(k, channels * side * side))

    def forward(self, x):
        return x + self.net(x).view_as(x)


class ConvAttacker(nn.Module):
    """All-convolutional encoder-decoder (one stride-2 down, one transposed-conv up)."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32):
        super().__init__()
        c, w = shape[0], width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), GlobalContext(2 * w, shape[1] // 2),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, c, 3, padding=1),
        )

    def forward(self, x):
        return self.net(x)


class UNetAttacker(nn.Module):
    """A small two-level U-Net: the skip connection keeps pixel-level detail."""

    def __init__(self, shape: tuple[int, int, int], width: int = 32):
        super().__init__()
        c, w = shape[0], width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.ReLU())

        self.enc1, self.enc2 = block(c, w), block(w, 2 * w)
        self.down = nn.MaxPool2d(2)
        self.context = GlobalContext(2 * w, shape[1] // 2)
        self.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec = block(2 * w, w)
        self.out = nn.Conv2d(w, c, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.context(self.enc2(self.down(e1)))
        return self.out(self.dec(torch.cat([self.up(e2), e1], dim=1)))


def build_attacker(arch: str, shape: tuple[int, int, int], hidden: int = 300, width: int = 32,
                   param: str = "tanh") -> nn.Module:
    """h(x; v) of `arch`; `param` (tanh | box) tells attacks.attnet_example how to turn h into z."""
    if arch == "mlp":
        m = MLPAttacker(shape, hidden)
    elif arch == "conv":
        m = ConvAttacker(shape, width)
    elif arch == "unet":
        m = UNetAttacker(shape, width)
    else:
        raise UserError(f"attacker arch: unknown '{arch}'; allowed values: mlp, conv, unet")
    if param not in ("tanh", "box"):
        raise UserError(f"attacker param: unknown '{param}'; allowed values: tanh, box")
    m.param = param
    return m


def classifier_meta(arch: str, x_shape, classes: int, **extra) -> dict:
    c, h, _ = x_shape[-3:]
    return {"kind": "classifier", "arch": arch, "in_channels": int(c), "classes": int(classes),
            "side": int(h), **extra}


def attacker_meta(arch: str, x_shape, hidden: int, width: int, param: str = "tanh", **extra) -> dict:
    return {"kind": "attacker", "arch": arch, "shape": [int(s) for s in x_shape[-3:]],
            "hidden": hidden, "width": width, "param": param, **extra}


KINDS = {"classifier": "a classifier (defender)", "attacker": "an attacker network (AttNet)",
         "magnet": "a MagNet defender (classifier + reformer + detector)"}
META_KEYS = {"classifier": ("arch", "in_channels", "classes", "side"),
             "attacker": ("arch", "shape", "hidden", "width")}


def model_from_checkpoint(ckpt: dict, expect: str | None = None) -> nn.Module:
    """Rebuild a classifier or attacker from an advgame checkpoint (see artifacts.save_checkpoint).

    `expect` ("classifier" / "attacker"): refuse, in one line naming the file, a checkpoint of
    another kind (an attacker or MagNet's where a classifier is expected). A MagNet checkpoint
    holds its classifier, which this rebuilds when nothing is expected."""
    meta, path = ckpt["meta"], getattr(ckpt, "path", "checkpoint")
    kind = meta.get("kind", "classifier")
    if kind not in KINDS:
        raise UserError(f"{path}: unknown checkpoint kind '{kind}'; allowed kinds: {', '.join(KINDS)}")
    if expect is not None and kind != expect:
        from advgame.artifacts import producer_hint

        raise UserError(f"{path}: {KINDS[kind]} checkpoint where {KINDS[expect]} is expected; restore "
                        f"the right file with `dvc checkout {path}` or {producer_hint(path)}")
    built = "attacker" if kind == "attacker" else "classifier"
    missing = [k for k in META_KEYS[built] if k not in meta]
    if missing:
        raise UserError(f"{path}: checkpoint meta lacks {', '.join(missing)}; rerun the stage that writes it")
    if built == "attacker":
        # checkpoints written before the box form existed are tanh attackers
        m = build_attacker(meta["arch"], tuple(meta["shape"]), meta["hidden"], meta["width"],
                           meta.get("param", "tanh"))
    else:
        m = build_classifier(meta["arch"], meta["in_channels"], meta["classes"], meta["side"])
    mismatch = state_mismatch(m.state_dict(), ckpt["state_dict"])
    if mismatch:
        raise UserError(f"{path}: checkpoint does not fit architecture '{meta['arch']}': {mismatch}; it was "
                        "written for other params (classifier.arch, data.dataset, attacker.hidden/width): "
                        "rerun the stage that writes it, or `dvc checkout` it")
    m.load_state_dict(ckpt["state_dict"])
    return m


def state_mismatch(want: dict, have: dict) -> str:
    """The first difference between a model's state_dict and a checkpoint's, in words ('' = none)."""
    for k, v in want.items():
        if k not in have:
            return f"tensor '{k}' missing from the file"
        got = getattr(have[k], "shape", None)
        if got is None:
            return f"'{k}' in the file is not a tensor"
        if tuple(got) != tuple(v.shape):
            return f"tensor '{k}' has shape {list(got)} in the file, the model expects {list(v.shape)}"
    extra = [k for k in have if k not in want]
    return f"tensor '{extra[0]}' in the file has no place in the model" if extra else ""


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x[s]).argmax(1) for s in batch_slices(len(x), batch)]) if len(x) else \
            torch.empty(0, dtype=torch.long, device=x.device)


def inference_copy(model: nn.Module, example: torch.Tensor):
    """A frozen, traced copy of `model` in eval mode for gradient-free forwards on a CPU
    (oneDNN's fused convolution + ReLU and blocked layouts: 2-2.5x eager mode's throughput for
    the study's SmallCNN, bench/bench_cascade.py), or None where none can be made (not a CPU, a
    model that does not trace). Its logits agree with the model's to ~1e-6, not bit for bit: a
    caller that decides on them confirms a decision that matters with `model` itself."""
    if example.device.type != "cpu" or not len(example):
        return None
    try:
        with warnings.catch_warnings(), torch.no_grad(), eval_mode(model):
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.compile
            frozen = torch.jit.freeze(torch.jit.trace(model, example).eval())
            fast = torch.jit.optimize_for_inference(frozen)
    except RuntimeError:
        return None
    passes.alias(fast, model)  # its forwards count as the model's (pipeline cost table)
    return fast


def batch_slices(n: int, batch: int):
    for i in range(0, n, batch):
        yield slice(i, min(i + batch, n))
