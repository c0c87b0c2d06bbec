"""Benchmark (not a test): our PGD and APGD against ART's ProjectedGradientDescent and
AutoProjectedGradientDescent and torchattacks' PGD, on the same model and the same test images,
at the same step count; and our Square against ART's SquareAttack at the same queries. Prints
seconds, images x steps per second, the error each reached, and the ratios to ours.

    .venv/bin/python bench/bench_attacks.py [--model models/baseline.pt] [--n 1000] [--eta 0.3]
        [--steps 40] [--square-queries 100] [--threads 2] [--batch 256] [--repeats 2]

--model takes a checkpoint of the project or a bare SmallCNN state_dict (e.g. a quickly trained
robust model kept outside git); --train-robust instead fine-tunes the baseline for one epoch
of PGD-AT (5 steps) first, which makes the comparison meaningful (an undefended model is fooled
by everything in a step or two). torchattacks is not a project dependency: the benchmark
installs it with `pip install --no-deps --target` into a throwaway folder ($ADVGAME_BENCH_DEPS,
default /tmp/advgame-bench-deps) and adds that folder to sys.path here only; if that fails it
says so and skips it. The attacks are interleaved within each repeat and the fastest repeat is
reported, so that load from other processes hits them alike.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from advgame.attacks.apgd import apgd
from advgame.attacks.art import _classifier
from advgame.attacks.pgd import pgd
from advgame.attacks.square import square
from advgame.data import load_split
from advgame.models import predict


def load_model(path: str, robust: bool):
    from advgame.artifacts import load_checkpoint
    from advgame.models import SmallCNN, model_from_checkpoint

    try:
        m = model_from_checkpoint(load_checkpoint(path))
    except Exception:  # a bare state_dict
        m = SmallCNN()
        m.load_state_dict(torch.load(path, weights_only=True))
    if robust:
        from advgame.config import TrainParams
        from advgame.defenses.field import pgd_at_objective
        from advgame.training import fit

        x, y = load_split("data/prepared", "train")
        t = time.perf_counter()
        fit(m, x, y, pgd_at_objective(0.3, 5, 2.5, 0), TrainParams(epochs=1, batch=64, lr=1e-3))
        print(f"fine-tuned with PGD-AT for one epoch in {time.perf_counter() - t:.0f} s")
    return m.eval()


def torchattacks_module():
    try:
        import torchattacks  # noqa: F401
        return torchattacks, ""
    except ImportError:
        pass
    target = os.environ.get("ADVGAME_BENCH_DEPS", "/tmp/advgame-bench-deps")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target,
                        "torchattacks"], capture_output=True, text=True, timeout=300)
    sys.path.insert(0, target)
    try:
        import torchattacks
        return torchattacks, f"(installed with --no-deps into {target})"
    except ImportError as e:
        return None, f"torchattacks not available: pip said {r.stderr.strip()[-200:]!r}; import: {e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/baseline.pt")
    ap.add_argument("--train-robust", action="store_true")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eta", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--square-queries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model, a.train_robust)
    x, y = load_split("data/prepared", "test", a.n)
    eta, steps, step = a.eta, a.steps, 2.5 * a.eta / a.steps
    clf = _classifier(model, x, 10, torch.device("cpu"))
    ta, ta_note = torchattacks_module()

    def art(attack_cls, **kw):
        def run():
            np.random.seed(0)
            adv = attack_cls(clf, norm=np.inf, eps=eta, batch_size=a.batch, verbose=False, **kw).generate(
                x=x.numpy(), y=y.numpy())
            return torch.from_numpy(np.asarray(adv, dtype=np.float32))
        return run

    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        ProjectedGradientDescent,
        SquareAttack,
    )

    gradient = {  # name -> (run, steps per image)
        "ours PGD (early stop)": (lambda: pgd(model, x, y, eta, steps, step, batch=a.batch), steps),
        "ours PGD (no early stop)": (lambda: pgd(model, x, y, eta, steps, step, batch=a.batch, early_stop=False), steps),
        "ours APGD-CE": (lambda: apgd(model, x, y, eta, steps, "ce", batch=a.batch), steps),
        "ART PGD": (art(ProjectedGradientDescent, eps_step=step, max_iter=steps, num_random_init=1), steps),
        "ART APGD-CE": (art(AutoProjectedGradientDescent, eps_step=2 * eta, max_iter=steps, nb_random_init=1,
                            loss_type="cross_entropy"), steps),
    }
    if ta is not None:
        gradient["torchattacks PGD"] = (
            lambda: ta.PGD(model, eps=eta, alpha=step, steps=steps, random_start=True)(x, y), steps)
    black = {
        "ours Square": (lambda: square(model, x, y, eta, a.square_queries, batch=a.batch), a.square_queries),
        "ART Square": (art(SquareAttack, max_iter=a.square_queries, nb_restarts=1), a.square_queries),
    }
    print(f"model {a.model}{' + 1 epoch PGD-AT' if a.train_robust else ''}; {len(x)} test images; eta {eta}; "
          f"{steps} steps of {step:.4f}; Square {a.square_queries} queries; batch {a.batch}; "
          f"{torch.get_num_threads()} threads; clean error {(predict(model, x) != y).float().mean():.3f}")
    if ta is None or ta_note:
        print(ta_note)
    for title, group, ref in (("gradient attacks", gradient, "ours PGD (early stop)"),
                              ("black-box", black, "ours Square")):
        rows = {}
        for _ in range(a.repeats):
            for name, (run, k) in group.items():
                t = time.perf_counter()
                xa = run()
                sec = time.perf_counter() - t
                assert (xa - x).abs().max() <= eta + 1e-5 and 0 <= xa.min() and xa.max() <= 1, name
                err = (predict(model, xa) != y).float().mean().item()
                sec = min(sec, rows[name][0]) if name in rows else sec
                rows[name] = (sec, len(x) * k / sec, err)
        print(f"\n{title}: {'attack':26s} {'seconds':>8s} {'img*steps/s':>12s} {'error':>7s} "
              f"{'time/ours':>10s} {'error-ours':>11s}")
        r0 = rows[ref]
        for name, (sec, rate, err) in rows.items():
            print(f"{'':{len(title) + 2}s}{name:26s} {sec:8.1f} {rate:12.0f} {err:7.3f} {sec / r0[0]:10.2f} "
                  f"{err - r0[2]:+11.3f}")


if __name__ == "__main__":
    main()
