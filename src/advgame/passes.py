"""Counts the image-passes a process runs through each of the study's networks: the work a
stage cannot do without, against which advgame.pipeline.cost sets this host's best throughput
(the floor).

A pass is one image through one network: `fwd` counts every image a network's forward sees,
`bwd` the images a backward then went through (the forward's output received a gradient). A
network is counted by its class (NETWORKS: the classifiers, the attacker networks, MagNet's
reformer), the outermost of them when they nest, and a traced copy (models.inference_copy) as
the networks it was traced from (`alias`). Counting is a global forward hook: it reads shapes and
adds an autograd hook, it never changes a value, so the study's numbers are the same with it.

    with counting() as counter:
        ...                       # train, attack, evaluate
    counter.snapshot()            # {"smallcnn": {"shape": [1, 28, 28], "fwd": n, "bwd": m, "calls": k}}
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

import torch
from torch import nn

# class name -> the network's name in the cost table (models.py, defenses/magnet.py, torchvision)
NETWORKS = {"SmallCNN": "smallcnn", "CifarCNN": "cifarcnn", "ResNet": "resnet18", "MLPAttacker": "mlp",
            "ConvAttacker": "conv", "UNetAttacker": "unet", "Reformer": "reformer"}
_aliases: "weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]]" = weakref.WeakKeyDictionary()
_local = threading.local()  # the depth of counted forwards on this thread (nesting counts once)


def network_name(module: nn.Module) -> str | None:
    return NETWORKS.get(type(module).__name__)


def alias(copy: nn.Module, model: nn.Module) -> None:
    """Count a forward of `copy` (a traced copy of `model`) as one of each network in `model`."""
    names = tuple(n for n in (network_name(m) for m in model.modules()) if n)
    top = network_name(model)
    try:
        _aliases[copy] = (top,) if top else names
    except TypeError:  # not weak-referenceable: left uncounted rather than guessed
        pass


class Counter:
    def __init__(self):
        self.passes: dict[str, dict] = {}
        self.lock = threading.Lock()

    def add(self, name: str, x: torch.Tensor, kind: str, n: int) -> None:
        with self.lock:
            e = self.passes.setdefault(name, {"shape": list(x.shape[1:]), "fwd": 0, "bwd": 0, "calls": 0})
            e[kind] += n
            if kind == "fwd":
                e["calls"] += 1

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return {k: dict(v) for k, v in sorted(self.passes.items())}


def _names(module: nn.Module) -> tuple[str, ...]:
    name = network_name(module)
    if name:
        return (name,)
    try:
        return _aliases.get(module, ())
    except TypeError:
        return ()


@contextmanager
def counting():
    """Count every pass in this block (all threads); yields the Counter."""
    counter = Counter()

    def pre(module, args):
        if _names(module):
            _local.depth = getattr(_local, "depth", 0) + 1

    def post(module, args, output):
        names = _names(module)
        if not names:
            return None
        _local.depth -= 1
        if _local.depth or not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return None
        x, n = args[0], len(args[0])
        for name in names:
            counter.add(name, x, "fwd", n)
        if output.requires_grad and torch.is_grad_enabled():
            def backward(grad, names=names, x=x, n=n):
                for name in names:
                    counter.add(name, x, "bwd", n)
            output.register_hook(backward)
        return None

    handles = [nn.modules.module.register_module_forward_pre_hook(pre),
               nn.modules.module.register_module_forward_hook(post, always_call=True)]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()
