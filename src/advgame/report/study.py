"""The study as the report sees it: every evaluation, the cat-and-mouse files, the stage reports and
the game's extra stages, loaded once from reports/; and reports/results.json built from it."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from advgame import config, names
from advgame.artifacts import load_json
from advgame.evaluation import paired
from advgame.evaluation.sanity import transfer_check
from advgame.report import game as game_report
from advgame.report.exploitability import load_game
from advgame.report.strength import load_strength
from advgame.report.tables import _float, entry
from advgame.report.training import load_training, results_entries
from advgame.runtime import PIN_VARS


@dataclass
class Study:
    params: config.Params
    defenders: dict  # name -> eval object (results contract)
    missing: list[str] = field(default_factory=list)  # final defenders without an evaluation
    catmouse: list[dict] = field(default_factory=list)  # curve rows
    matrix: dict | None = None
    meta: dict = field(default_factory=dict)
    device: str = "cpu"
    table5: dict = field(default_factory=dict)      # defender -> results at the extra etas
    sweep: list = field(default_factory=list)       # minimax gamma sweep points
    histories: dict = field(default_factory=dict)   # game mode -> per-epoch rows
    root: Path = Path(".")
    ablations: dict = field(default_factory=dict)   # name -> its JSON (names.ablation_path)
    seeds: paired.SeedTable = field(default_factory=lambda: paired.SeedTable(None))
    catmouse_n: int | None = None                   # test images of the cat-and-mouse stage
    verdicts: list = field(default_factory=list)    # "Does the paper hold?" (verdicts.py)
    hosts: list = field(default_factory=list)       # the machines the stages ran on (hosts())
    strength: dict = field(default_factory=dict)    # defender -> its attack-strength curve
    training: dict = field(default_factory=dict)    # model -> its training record (report/training.py)
    game: dict = field(default_factory=dict)        # game defender -> its exploitability (report/exploitability.py)
    seeds_stale: list = field(default_factory=list)  # cells where names.SEEDS's main seed is not this run's
    _tests: dict | None = field(default=None, repr=False)  # family(): the paired tests' p-values
    _holm: dict = field(default_factory=dict, repr=False)  # family(): their Holm-adjusted p-values

    @property
    def n_eval(self) -> int | None:
        """Test images the evaluation used (its clean cell's n), None without an evaluation."""
        ns = [c["n"] for d in self.defenders if (c := self.get(d, "clean")) and c.get("n")]
        return max(ns) if ns else None

    def n_at(self, eta: str) -> int | None:
        """Test images at one eta (the sweep's other etas may see a subset): its worst-case cells' n."""
        ns = [c["n"] for d in self.defenders if (c := self.get(d, "worst-case", eta)) and c.get("n")]
        return max(ns) if ns else None

    @property
    def eta(self) -> str:
        return config.eta_key(self.params.attack.eta)

    def get(self, d: str, attack: str, eta: str | None = None) -> dict | None:
        return entry(self.defenders, d, attack, "0" if attack == "clean" else (eta or self.eta))

    def obj(self, name: str) -> dict | None:
        """A defender's evaluation or an ablation's results (same cell shape)."""
        return self.defenders.get(name) or self.ablations.get(name)

    def pair(self, a: str, attack_a: str, b: str, attack_b: str | None = None,
             eta: str | None = None) -> paired.Paired | None:
        """a's cell against b's on the same test images (McNemar), labelled `name attack`; inside
        `family`, with Holm's correction over every test the family makes."""
        attack_b = attack_b or attack_a
        la = f"`{a}` {attack_a}" if attack_a != attack_b or a == b else f"`{a}`"
        lb = f"`{b}` {attack_b}" if attack_a != attack_b or a == b else f"`{b}`"
        pr = paired.compare(self.obj(a), attack_a, self.obj(b), attack_b, eta or self.eta, la, lb,
                            self.seeds, a, b)
        key = (a, attack_a, b, attack_b, eta or self.eta)
        if pr is not None and pr.p is not None:
            if self._tests is not None:
                self._tests[key] = pr.p_test
            if key in self._holm:
                pr.p_holm, pr.family = self._holm[key], len(self._holm)
        return pr

    def family(self, answer):
        """answer(self) with every paired test it makes corrected by Holm over that family: a first
        pass collects the tests' p-values, the second decides on the adjusted ones."""
        self._tests, self._holm = {}, {}
        try:
            answer(self)
            self._holm, self._tests = paired.holm(self._tests), None
            return answer(self)
        finally:
            self._tests, self._holm = None, {}

    def subset(self, n: int | None = None) -> str:
        """How a table names its test images."""
        n = n if n is not None else self.n_eval
        total = self.meta.get("test", {}).get("shape", [None])[0]
        if n is None:
            return "test images: n/a"
        return f"all {n} test images" if n == total else f"the first {n} test images"

def read_curve(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        out = [{"k": int(float(r["k"])), **{c: _float(r.get(c)) for c in ("clean", "own_attack", "next_attack")}}
               for r in csv.DictReader(fh)]
    return sorted(out, key=lambda r: r["k"])


def _stage_reports(root: Path, pipeline: Path | None = None) -> list[Path]:
    """The stage reports of the current pipeline (dvc.yaml's stages, in its order; `pipeline`:
    that file, by default root's): a report left by a stage that is no longer in the pipeline is
    not part of this run."""
    import yaml

    d = root / names.STAGE_REPORTS
    dvc = pipeline or root / "dvc.yaml"
    order = list(yaml.safe_load(dvc.read_text()).get("stages", {})) if dvc.exists() else \
        sorted(f.stem for f in d.glob("*.json"))
    return [d / f"{s}.json" for s in order if s != "report" and (d / f"{s}.json").exists()]


def load_study(p: config.Params, root: str | Path = ".", device: str = "cpu",
               inputs: str | Path | None = None) -> Study:
    """The study under `root`; `inputs`: where the files its stages wrote to DVC's cache are (the
    report stage's published copies, report/publish.py), by default root itself. The git-tracked
    seed table and dvc.yaml are read from root."""
    git_root, root = Path(root), Path(inputs if inputs is not None else root)
    reports = _stage_reports(root, git_root / "dvc.yaml")
    finals = names.final_defenders(p)
    defenders, missing = {}, []
    for d in finals:
        f = root / names.run_path(names.eval_path(d))
        if f.exists():
            defenders[d] = load_json(f)
        else:
            missing.append(d)
    cm = root / names.run_path(names.CATMOUSE)
    curve = read_curve(cm / "curve.csv") if (cm / "curve.csv").exists() else []
    matrix = load_json(cm / "matrix.json") if (cm / "matrix.json").exists() else None
    # the AttNet-transfer matrix is its own stage: its cells join each target's row
    tf = root / names.TRANSFER
    if tf.exists():
        for target, cells in load_json(tf).items():
            if target in defenders:
                res = defenders[target].setdefault("results", {})
                res.update(cells)
                sanity, detail = transfer_check(res, p.attack.eta)
                defenders[target].setdefault("sanity", {}).update(sanity)
                defenders[target].setdefault("sanity_detail", {}).update(detail)
    devices, envs = [], {}
    for f in reports:
        st = load_json(f)
        devices.append(st.get("device"))
        envs[f.stem] = st.get("env", {})
    meta_f = root / names.DATA / "meta.json"
    meta = load_json(meta_f) if meta_f.exists() else {}
    devs = sorted({str(x) for x in devices if x})
    sweep = game_report.sweep_points(p, root, defenders)
    mm = root / names.stage_report("minimax")
    for q in sweep:
        if q["source"] == "eval-minimax" and mm.exists():
            q["penalty_ratio"] = load_json(mm).get("penalty_ratio_last_epoch")
    abl = [names.ablation_name(k, t) for k, t in names.ablation_variants(p)]
    ablations = {a: load_json(f) for a in abl if (f := root / names.run_path(names.ablation_path(a))).exists()}
    seeds_f = git_root / names.SEEDS
    seeds_obj = load_json(seeds_f) if seeds_f.exists() else None
    table5 = game_report.table5_cells(root)
    stale = stale_seeds(seeds_obj, defenders, table5)
    cm_n = next((load_json(f).get("n_test") for f in (root / names.stage_report("catmouse"),
                                                       root / names.stage_report("round-1"))
                 if f.exists() and load_json(f).get("n_test")), None)
    cm_n = cm_n or (matrix or {}).get("n_test")
    histories = game_report.load_histories(root)
    return Study(p, defenders, missing, curve, matrix, meta, ", ".join(devs) or device,
                 table5, sweep, histories, root,
                 ablations, paired.SeedTable(None if stale else seeds_obj),
                 cm_n or meta.get("test", {}).get("shape", [None])[0], hosts=hosts(envs),
                 strength=load_strength(root), training=load_training(p, root, reports, ablations),
                 seeds_stale=stale,
                 game=load_game(p, root, defenders, meta.get("test", {}).get("shape", [None])[0], histories))


def stale_seeds(obj: dict | None, defenders: dict, table5: dict | None = None) -> list[str]:
    """The cells where names.SEEDS's first seed (the main run it was collected with) differs from
    this run's evaluation (or, for a cell of Table 5's further etas, its table5 stage, which the
    file holds there): the file was made before the models were retrained (`make seeds`
    again), and its other seeds ran older code, so no answer may rest on it."""
    out = []
    for d, by_attack in (obj or {}).get("defenders", {}).items():
        for attack, by_eta in by_attack.items():
            for eta, v in by_eta.items():
                c = (table5 or {}).get(d, {}).get(attack, {}).get(eta) or entry(defenders, d, attack, eta)
                if c is not None and v.get("per_seed") and abs(v["per_seed"][0] - c["error"]) > 5e-4:
                    out.append(f"`{d}` {attack} at {eta}")
    return out


SCHEMA_VERSION = 1  # of reports/results.json (docs/results.md): bumped when a key changes meaning or goes away
HOST_KEYS = ("cpu", "cpu_capability", "threads", "device", "torch", "mkl", "onednn")
PINS = tuple(k.lower() for k in PIN_VARS)  # the kernel pins in effect, when set


def hosts(envs: dict[str, dict]) -> list[dict]:
    """The distinct machines of the stage reports (stage -> its `env`), each with the stages it
    ran: what a rerun elsewhere must match to give the same bytes (README, "Determinism")."""
    out: dict[tuple, dict] = {}
    for stage, env in envs.items():
        h = {k: env[k] for k in HOST_KEYS if k in env}
        if not h:  # a stage without torch (check-params) says nothing about a machine
            continue
        h.update({k: v for k, v in env.items() if k in PINS})
        out.setdefault(tuple(sorted(h.items())), {**h, "stages": []})["stages"].append(stage)
    return list(out.values())


def results_json(s: Study, commit: str = "unknown") -> dict:
    """reports/results.json, exactly the results contract; `commit`: the code's git commit."""
    p = s.params
    return {
        "schema_version": SCHEMA_VERSION,
        "commit": commit,
        "config": {
            "dataset": s.meta.get("dataset", p.data.dataset),
            "eta": p.attack.eta,
            "etas": list(p.eval.etas),
            "eval": p.eval.model_dump(),
            "art": p.art.model_dump(),
            "defenders": names.final_defenders(p),
            "rounds": p.catmouse.rounds if "catmouse" in p.study.defenders else 0,
            "seeds": list(p.eval.seeds),
            "device": s.device,
        },
        "defenders": s.defenders,
        "catmouse": s.catmouse,
        "hosts": s.hosts,
        "verdicts": s.verdicts,
        "strength": s.strength,
        "training": results_entries(s.training),
        "game": s.game,
    }
