"""MagNet (Meng & Chen 2017, arXiv 1705.09064): a denoising autoencoder in front of a frozen
classifier (the reformer) and a reconstruction-error detector.

- Reformer: the paper's small MNIST autoencoder (its "Detector II" net, structure [3] in the
  reference code): three 3x3 convolutions, sigmoid activations, trained to map
  clip(x + noise * N(0, 1), 0, 1) back to x (MSE).
- Detector: per-example mean |x - ae(x)| (L1, as the paper's Detector II); an input is rejected
  when its error exceeds a threshold set on held-out clean data so that a fraction `fpr` of it
  is rejected.
- The defender classifies classifier(ae(x)). Grey-box attackers target the bare classifier;
  white-box attackers differentiate through the reformer and pay `detector_weight` per unit of
  reconstruction error above the threshold.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advgame import UserError
from advgame.attacks.target import Defender
from advgame.models import eval_mode, model_from_checkpoint
from advgame.training import Objective


class Reformer(nn.Module):
    def __init__(self, channels: int = 1, hidden: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.Sigmoid(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.Sigmoid(),
            nn.Conv2d(hidden, channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.net(x)


def denoising_objective(noise: float, seed: int = 0) -> Objective:
    """fit objective for the reformer: MSE between ae(clip(x + noise * N(0, 1))) and x (the
    labels are ignored)."""
    gen = torch.Generator().manual_seed(seed)

    def objective(ae, xb, yb):
        noisy = (xb + noise * torch.randn(xb.shape, generator=gen).to(xb.device)).clamp(0.0, 1.0)
        return F.mse_loss(ae(noisy), xb)

    return objective


def recon_error(ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-example mean absolute reconstruction error (differentiable)."""
    return (x - ae(x)).abs().flatten(1).mean(1)


@torch.no_grad()
def recon_errors(ae: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with eval_mode(ae):
        return torch.cat([recon_error(ae, x[i:i + batch]) for i in range(0, len(x), batch)])


def threshold_for(errors: torch.Tensor, fpr: float) -> float:
    """The smallest observed error with exactly floor(fpr * n) calibration errors above it
    (`reject = error > threshold`), i.e. the (1 - fpr) empirical quantile."""
    if len(errors) == 0:
        raise UserError("magnet: no held-out clean data to set the detector threshold")
    n = len(errors)
    k = math.floor(fpr * n)
    return float(errors.sort().values[n - k - 1])


def build_defender(name: str, classifier: nn.Module, ae: nn.Module, threshold: float,
                   detector_weight: float, meta: dict | None = None) -> Defender:
    classifier.eval()
    ae.eval()
    for p in [*classifier.parameters(), *ae.parameters()]:
        p.requires_grad_(False)
    model = nn.Sequential(ae, classifier).eval()

    def reject(x):
        return recon_error(ae, x) > threshold

    def detect(x):  # logits and the detector's score from one pass of the reformer
        r = ae(x)
        return classifier(r), (x - r).abs().flatten(1).mean(1, keepdim=True)

    def attack_loss(m, x, y):
        return F.cross_entropy(m(x), y, reduction="none") - detector_weight * F.relu(recon_error(ae, x) - threshold)

    def joint_attack_loss(x, y, target=None):  # the same loss and the success check from one pass
        logits, score = detect(x)
        fooled = (logits.argmax(1) != y) & ~(score[:, 0] > threshold)
        return F.cross_entropy(logits, y, reduction="none") - detector_weight * F.relu(score[:, 0] - threshold), fooled

    joint_attack_loss.joint = True
    attack_loss.joint_version = joint_attack_loss  # evaluate.py's PGD uses it (one reformer pass per step)

    return Defender(name=name, model=model, classifier=classifier, reject=reject,
                    attack_loss=attack_loss, meta=meta, detect=detect, thresholds=[float(threshold)])


class MagNet(nn.Module):
    """The whole defense as one module (the registered model `advgame-magnet`): reformer,
    classifier and detector. Its output has one column more than the classifier's: the last,
    "rejected", wins the argmax exactly when the detector rejects the input. So argmax == y is a
    correct answer, argmax == classes a rejection (an error on a clean input, a defended
    adversarial one), anything else a misclassification: Defender.errors' rule."""

    def __init__(self, ae: nn.Module, classifier: nn.Module, threshold: float):
        super().__init__()
        self.ae, self.classifier = ae, classifier
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.ae(x)
        logits = self.classifier(r)
        rejected = (x - r).abs().flatten(1).mean(1) > self.threshold
        top = logits.amax(1)
        reject_logit = torch.where(rejected, top + 1.0, logits.amin(1) - 1.0)
        return torch.cat([logits, reject_logit[:, None]], 1)


def magnet_meta(classifier_meta: dict, ae: Reformer, threshold: float, detector_weight: float,
                fpr: float, noise: float) -> dict:
    conv = ae.net[0]
    return {**classifier_meta, "kind": "magnet", "threshold": float(threshold),
            "detector_weight": float(detector_weight), "fpr": float(fpr), "noise": float(noise),
            "detector_norm": "l1", "reformer_channels": conv.in_channels,
            "reformer_hidden": conv.out_channels}


def defender_from_checkpoint(name: str, ckpt: dict) -> Defender:
    """Rebuild a MagNet defender from its checkpoint (classifier state_dict + meta + reformer)."""
    meta = ckpt["meta"]
    if "reformer" not in ckpt or "threshold" not in meta:
        raise UserError("magnet checkpoint has no reformer/threshold; rerun the magnet stage")
    classifier = model_from_checkpoint(ckpt)
    ae = Reformer(meta["reformer_channels"], meta["reformer_hidden"])
    try:
        ae.load_state_dict(ckpt["reformer"])
    except RuntimeError as e:
        raise UserError(f"magnet reformer does not fit its architecture: {str(e).splitlines()[0]}") from None
    return build_defender(name, classifier, ae, meta["threshold"], meta["detector_weight"], meta)
