"""The study's cost against its compute floor, on this host.

Every stage counts the image-passes it runs through each network (advgame.passes; in its timing
file, names.timing_path). The floor is this host's best throughput for each network and pass
type, measured here and now at the study's thread count (`floor`): the best over batch sizes,
eager or traced (models.inference_copy) for a forward, parameter or input gradients for a
forward+backward. Then, per stage:

- floor_s = bwd passes / best forward+backward rate + forward-only passes / best forward rate;
- body_s: the seconds of the stage's work (its body, pipeline.stage.run_stage), without the
  params check, the tracking run's opening and closing or the writing of the stage report;
- wall_s: from the end of the stage that ended before this one's process started (DVC's work
  between stages: hashing, the lock, the run cache) to this stage's end, so the Python start-up
  and the imports are in it; a stage that ran alone (more than GAP_S after any other) counts
  from its own process start, and one whose run (`advgame warm` marks where it began:
  hostload.runs) began after the stage before it ended counts from that start;
- overhead_s = wall_s - body_s, in three parts: before_s (from that earlier end to this process's
  start: the earlier stage's closing of its run, the interpreter's teardown and DVC's work between
  the two), startup_s (process start to the body: Python, the imports, the params check) and
  closing_s (the body's end to the outputs written);
- efficiency = floor_s / body_s;
- others: the mean number of other runnable threads on the host during the body (pipeline.hostload:
  sampled by `advgame warm`, None where nothing sampled it); a stage at >= hostload.CONTENDED
  shared its cores, and the study row lists it under `contended`: its seconds overstate its cost.

The study row sums them and its efficiency is floor / wall. Seconds differ between runs of the
same inputs, so this lives in reports/cost.json, beside the timings, where git does not look
(docs/results.md, "Cost").

    python -m advgame.pipeline.cost      # measure the floor, write reports/cost.json, print the table
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from advgame import config, names
from advgame.pipeline import hostload
from advgame.report.tables import md_table

COST = "reports/cost.json"
GAP_S = 120.0          # a longer wait between two stages' runs: not one `dvc repro`
BATCHES = (32, 64, 128, 256, 512, 1024)
MIN_S = 0.25           # time each setting for at least this long


def network(name: str, shape: list[int], p: config.Params) -> torch.nn.Module:
    """The network the pass counter called `name`, at the study's sizes."""
    from advgame import models
    from advgame.defenses.magnet import Reformer

    c, side = shape[0], shape[-1]
    if name in models.CLASSIFIERS:
        return models.build_classifier(name, c, 10, side)
    if name == "reformer":
        return Reformer(c)
    return models.build_attacker(name, tuple(shape), p.attacker.hidden, p.attacker.width)


def _rate(fn, batch: int) -> float:
    """Images per second of fn() on a batch, timed over >= MIN_S after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while (t := time.perf_counter() - start) < MIN_S or n < 2:
        fn()
        n += 1
    return n * batch / t


def rates(net: torch.nn.Module, shape: list[int], batches: tuple[int, ...] | None = None) -> dict[str, dict]:
    """The best images/s of a forward and of a forward+backward, and the batch size that gave it."""
    from advgame import models

    net.eval()
    best = {"fwd": (0.0, 0), "fwdbwd": (0.0, 0)}

    def keep(kind, r, b):
        if r > best[kind][0]:
            best[kind] = (r, b)

    for b in batches or BATCHES:
        x = torch.rand(b, *shape)
        traced = models.inference_copy(net, x)
        with torch.no_grad():
            keep("fwd", _rate(lambda: net(x), b), b)
            if traced is not None:
                keep("fwd", _rate(lambda: traced(x), b), b)

        def params_grad():
            net.zero_grad(set_to_none=True)
            net(x).sum().backward()

        def input_grad():
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(net(xi).sum(), xi)

        keep("fwdbwd", _rate(params_grad, b), b)
        for q in net.parameters():
            q.requires_grad_(False)
        keep("fwdbwd", _rate(input_grad, b), b)
        for q in net.parameters():
            q.requires_grad_(True)
    return {k: {"per_s": round(r, 1), "batch": b} for k, (r, b) in best.items()}


def floor(networks: dict[str, list[int]], p: config.Params) -> dict[str, dict]:
    """Measure this host's best rates for each network {name: input shape} at run.threads."""
    from advgame.runtime import setup_torch

    setup_torch(p.run.threads)
    torch.manual_seed(0)
    return {n: {"shape": s, **rates(network(n, s, p), s)} for n, s in sorted(networks.items())}


def timings(root: Path = Path(".")) -> dict[str, dict]:
    """Stage -> its timing file (the last run here), in dvc.yaml's order."""
    import yaml

    dvc = root / "dvc.yaml"
    order = list(yaml.safe_load(dvc.read_text()).get("stages", {})) if dvc.exists() else []
    files = {s: root / names.timing_path(s) for s in order}
    return {s: json.loads(f.read_text()) for s, f in files.items() if f.exists()}


def floor_seconds(passes: dict[str, dict], rates_: dict[str, dict]) -> float | None:
    """A stage's floor time; None if a network it ran has no measured rate."""
    total = 0.0
    for n, e in passes.items():
        if n not in rates_:
            return None
        total += e["bwd"] / rates_[n]["fwdbwd"]["per_s"] + max(e["fwd"] - e["bwd"], 0) / rates_[n]["fwd"]["per_s"]
    return total


def starts(timing: dict[str, dict], runs: list[float] = ()) -> dict[str, float]:
    """Where each stage's wall time starts (the module's docstring), from the clocks in its timing
    file; `runs` (hostload.runs): a run that began after the stage before it ended starts it."""
    ends = sorted((t["clock"]["ended"], s) for s, t in timing.items() if "clock" in t)
    out = {}
    for s, t in timing.items():
        if "clock" not in t:
            continue
        c = t["clock"]
        before = [e for e, _ in ends if e <= c["process"]]
        began = [r for r in runs if r <= c["process"]]
        start = before[-1] if before and c["process"] - before[-1] <= GAP_S else c["process"]
        out[s] = max(start, began[-1]) if began and c["process"] - began[-1] <= GAP_S else start
    return out


def _parts(c: dict, start: float) -> dict[str, float | None]:
    """A stage's overhead split: before_s, startup_s, closing_s (None where the clock lacks a mark)."""
    if "work" not in c:
        return {"before_s": None, "startup_s": None, "closing_s": None}
    return {"before_s": round(c["process"] - start, 2), "startup_s": round(c["work"] - c["process"], 2),
            "closing_s": round(c["ended"] - c["done"], 2)}


def table(timing: dict[str, dict], rates_: dict[str, dict], load: list[tuple[float, int]] = (),
          threads: int | None = None, runs: list[float] = ()) -> dict:
    """The cost entry: per stage passes, floor_s, body_s, wall_s, overhead_s, efficiency, others
    (`load`: hostload.samples(), at `threads` a stage, default torch's; `runs`: hostload.runs());
    `study`."""
    threads = threads or torch.get_num_threads()
    begin = starts(timing, runs)
    wall = {s: timing[s]["clock"]["ended"] - b for s, b in begin.items()}
    stages = {}
    for s, t in timing.items():
        passes = t.get("passes", {})
        fl = floor_seconds(passes, rates_)
        c = t.get("clock", {})
        body = round(c["done"] - c["work"], 2) if "work" in c else float(t.get("seconds", 0.0))
        stages[s] = {"passes": sum(e["fwd"] for e in passes.values()),
                     "bwd_passes": sum(e["bwd"] for e in passes.values()),
                     "floor_s": None if fl is None else round(fl, 2), "body_s": body,
                     "wall_s": round(wall[s], 2) if s in wall else None,
                     "overhead_s": round(wall[s] - body, 2) if s in wall else None,
                     **(_parts(c, begin[s]) if s in begin else _parts({}, 0.0)),
                     "efficiency": round(fl / body, 3) if fl is not None and body > 0 else None,
                     "others": hostload.others(load, c["work"], c["done"], threads) if "work" in c else None}
    rows = list(stages.values())

    def total(k):
        vals = [r[k] for r in rows if r[k] is not None]
        return round(sum(vals), 2) if vals else None

    study = {k: total(k) for k in ("passes", "bwd_passes", "floor_s", "body_s", "wall_s", "overhead_s")}
    for k in ("overhead_s", "before_s", "startup_s", "closing_s"):
        vals = [r[k] for r in rows if r[k] is not None]
        study[f"median_{k}"] = round(statistics.median(vals), 2) if vals else None
    study["efficiency"] = (round(study["floor_s"] / study["wall_s"], 3)
                           if study["floor_s"] is not None and study["wall_s"] else None)
    study["body_efficiency"] = (round(study["floor_s"] / study["body_s"], 3)
                                if study["floor_s"] is not None and study["body_s"] else None)
    study["contended"] = [s for s, r in stages.items() if (r["others"] or 0) >= hostload.CONTENDED]
    return {"stages": stages, "study": study, "floor": rates_, "threads": threads}


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _split(r: dict, prefix: str = "") -> str:
    """The overhead's parts: before the process / its start-up / its closing."""
    return " / ".join(_fmt(r.get(f"{prefix}{k}"), ".2f") for k in ("before_s", "startup_s", "closing_s"))


def _shared(cost: dict) -> str:
    """The sentence on stages that shared their cores (hostload)."""
    if all(r.get("others") is None for r in cost["stages"].values()):
        return ("Other work on the host during each body: not measured (stages run through `advgame warm`, "
                "as `make study` does, record it).")
    hit = cost["study"].get("contended") or []
    if not hit:
        return "No stage shared its cores with other work (others < 0.5 runnable threads on average)."
    return (f"Shared its cores with other work (others >= {hostload.CONTENDED} runnable threads on average), so its "
            f"body seconds overstate its cost: {', '.join(f'`{s}`' for s in hit)}; rerun one alone to measure it "
            "(`dvc repro -f -s STAGE`: the same bytes).")


def markdown(cost: dict) -> str:
    rows = [[s, f"{r['passes']:,}", _fmt(r["floor_s"]), _fmt(r["body_s"]), _fmt(r["wall_s"]),
             _fmt(r["overhead_s"]), _split(r), _fmt(r["efficiency"], ".2f"), _fmt(r.get("others"), ".1f")]
            for s, r in cost["stages"].items()]
    st = cost["study"]
    rows.append(["**study**", f"{st['passes'] or 0:,}", _fmt(st["floor_s"]), _fmt(st["body_s"]), _fmt(st["wall_s"]),
                 _fmt(st["overhead_s"]), "medians " + _split(st, "median_"), f"{_fmt(st['efficiency'], '.2f')} of wall, "
                 f"{_fmt(st['body_efficiency'], '.2f')} of bodies", f"{len(st.get('contended') or [])} shared"])
    rates_ = [[n, "x".join(map(str, r["shape"])), f"{r['fwd']['per_s']:,.0f} (batch {r['fwd']['batch']})",
               f"{r['fwdbwd']['per_s']:,.0f} (batch {r['fwdbwd']['batch']})"] for n, r in cost["floor"].items()]
    return ("Cost against this host's floor (passes: images through a network, forward; floor: passes at the "
            "best rate below; efficiency: floor / body; overhead: wall - body, split into the time before the "
            "stage's process started (the stage before it closing and exiting, DVC between them), its start-up "
            "(Python, imports, params check) and its closing (outputs written)). Median overhead per stage: "
            f"{_fmt(st['median_overhead_s'], '.2f')} s.\n\n"
            + md_table(["stage", "passes", "floor s", "body s", "wall s", "overhead s",
                        "before / start-up / closing s", "efficiency", "others"], rows)
            + "\n\n" + _shared(cost)
            + f"\n\nBest rates on this host ({cost['threads']} threads), images/s"
            + (f" (measured beside {cost['floor_others']:.1f} other runnable threads: too low, so every efficiency is "
               "too high; `python -m advgame.pipeline.cost --again` on an idle host)"
               if (cost.get("floor_others") or 0) >= hostload.CONTENDED else "") + ":\n\n"
            + md_table(["network", "input", "forward", "forward+backward"], rates_))


def measure(root: Path = Path("."), p: config.Params | None = None, again: bool = False) -> dict:
    """The floor for every network the last run's stages used, and the cost table; -> COST. The
    floor in COST is reused when it was measured after the last stage ended, for these networks
    and threads (`again`: measure it anyway)."""
    from advgame.runtime import setup_torch

    p = p or config.load(root / "params.yaml")
    setup_torch(p.run.threads)
    timing = timings(root)
    used = {n: e["shape"] for t in timing.values() for n, e in t.get("passes", {}).items()}
    out = root / COST
    last = max((t["clock"]["ended"] for t in timing.values() if "clock" in t), default=0.0)
    old = json.loads(out.read_text()) if out.exists() else {}
    if (not again and old.get("measured", 0.0) > last and old.get("threads") == torch.get_num_threads()
            and {n: r["shape"] for n, r in old.get("floor", {}).items()} == used):
        rates_ = old["floor"]
        floor_others = old.get("floor_others")
    else:  # other work beside the measurement makes the floor low (its rates) and every efficiency high
        floor_log = out.parent / "timing" / ".floor-load.log"
        floor_log.unlink(missing_ok=True)
        with hostload.sampling(floor_log, period=0.5):
            t0 = time.time()
            rates_ = floor(used, p)
        floor_others = hostload.others(hostload.samples(floor_log), t0, time.time(), p.run.threads)
        floor_log.unlink(missing_ok=True)
    log = root / hostload.LOG
    cost = {**table(timing, rates_, hostload.samples(log), p.run.threads, hostload.runs(log)), "floor_others": floor_others,
            "measured": old.get("measured", 0.0) if rates_ is old.get("floor") else time.time()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cost, indent=1) + "\n")
    return cost


def main() -> None:
    import argparse

    a = argparse.ArgumentParser(prog="python -m advgame.pipeline.cost", description=__doc__.split("\n\n")[0])
    a.add_argument("--again", action="store_true", help="measure the floor even if reports/cost.json has this run's")
    cost = measure(again=a.parse_args().again)
    print(markdown(cost))
    print(f"\n-> {COST}")


if __name__ == "__main__":
    main()
