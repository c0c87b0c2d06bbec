"""docs/results.md is the results contract: every key of every result file under reports/ is
documented there, and every file there is listed (issue 26, "the protocol in the repo").

The contract's fenced blocks are read as data:
- ```placeholders: `<name> regex` per line, a dynamic key (a regex may use other placeholders);
- ```files: the paths of every file under reports/, with placeholders;
- ```keys <target>: the key paths of a file (`/` between segments, `[]` for the elements of a
  list of objects; a CSV's header columns), or of a macro `<name>` whose lines replace a last
  segment `<name>` (`<cell>`, `<eval>`).
`# ...` starts a comment. Only keys are checked, never numbers, so a rerun of the study does not
touch this test; a new key or file does, until it is documented.
"""
from __future__ import annotations

import copy
import csv
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs/results.md"
REPORTS = ROOT / "reports"
NAME = re.compile(r"<([a-z0-9_-]+)>")


@dataclass
class Contract:
    placeholders: dict[str, str] = field(default_factory=dict)  # name -> regex (expanded)
    macros: dict[str, list[str]] = field(default_factory=dict)  # name -> key paths
    keys: dict[str, list[str]] = field(default_factory=dict)    # file template -> key paths
    files: list[str] = field(default_factory=list)              # file templates

    def regex(self, template: str) -> re.Pattern:
        """A key segment or path template -> its regex (literal text escaped)."""
        parts, pos = [], 0
        for m in NAME.finditer(template):
            if m.group(1) not in self.placeholders:
                raise AssertionError(f"docs/results.md: unknown placeholder {m.group(0)} in '{template}'")
            parts += [re.escape(template[pos:m.start()]), f"(?:{self.placeholders[m.group(1)]})"]
            pos = m.end()
        return re.compile("".join(parts) + re.escape(template[pos:]))

    def expand(self, path: str, depth: int = 0) -> list[tuple[str, ...]]:
        """A documented key path -> its segment tuples, macros at the end replaced by their lines."""
        segs = tuple(path.split("/"))
        m = NAME.fullmatch(segs[-1])
        if m and m.group(1) in self.macros:
            assert depth < 5, f"docs/results.md: macro <{m.group(1)}> nests too deep"
            return [segs[:-1] + tail for line in self.macros[m.group(1)] for tail in self.expand(line, depth + 1)]
        return [segs]

    def patterns(self, target: str) -> "Patterns":
        assert target in self.keys, f"docs/results.md has no `keys {target}` block"
        return Patterns(self, self.keys[target])


def _block_lines(body: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in body.splitlines())
    return [line for line in lines if line]


def parse(text: str) -> Contract:
    c = Contract()
    raw: dict[str, str] = {}
    for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, re.S | re.M):
        info, lines = m.group(1).strip(), _block_lines(m.group(2))
        if info == "placeholders":
            for line in lines:
                name, regex = line.split(None, 1)
                assert NAME.fullmatch(name), f"docs/results.md: bad placeholder name '{name}'"
                raw[name[1:-1]] = regex.strip()
        elif info == "files":
            c.files += lines
        elif info.startswith("keys "):
            target = info[5:].strip()
            macro = NAME.fullmatch(target)
            book = c.macros if macro else c.keys
            name = macro.group(1) if macro else target
            assert name not in book, f"docs/results.md: two `keys {target}` blocks"
            book[name] = lines
    assert not set(raw) & set(c.macros), "a name is both a placeholder and a macro"
    c.placeholders = _resolve(raw)
    return c


def _resolve(raw: dict[str, str]) -> dict[str, str]:
    """Placeholders used inside other placeholders' regexes, substituted until none is left."""
    out = dict(raw)
    for _ in range(len(out) + 1):
        new = {k: NAME.sub(lambda m: f"(?:{out[m.group(1)]})" if m.group(1) in out else m.group(0), v)
               for k, v in out.items()}
        if new == out:
            break
        out = new
    left = {k: v for k, v in out.items() if any(n in out for n in NAME.findall(v))}
    assert not left, f"docs/results.md: placeholders that refer to each other in a cycle: {sorted(left)}"
    return out


class Patterns:
    """The documented key paths of one file, compiled: a segment is a literal or a regex."""

    def __init__(self, c: Contract, paths: list[str]):
        self.rows = [tuple(s if not NAME.search(s) else c.regex(s) for s in segs)
                     for p in paths for segs in c.expand(p)]

    @staticmethod
    def _seg(pat, key: str) -> bool:
        return pat == key if isinstance(pat, str) else pat.fullmatch(key) is not None

    def documents(self, path: tuple[str, ...], empty: bool) -> bool:
        """A leaf is documented by a pattern of its length; an empty object or list by any
        pattern it is a prefix of."""
        return any((len(r) == len(path) or (empty and len(r) > len(path)))
                   and all(self._seg(p, k) for p, k in zip(r, path)) for r in self.rows)


@lru_cache(maxsize=1)
def contract() -> Contract:
    return parse(DOC.read_text())


def leaves(obj, path: tuple[str, ...] = ()):
    """(key path, empty) of every leaf: a scalar, a list of scalars, or an empty object."""
    if isinstance(obj, dict):
        if not obj:
            yield path, True
        for k, v in obj.items():
            yield from leaves(v, path + (str(k),))
    elif isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        for v in obj:
            yield from leaves(v, path + ("[]",))
    else:
        yield path, False


def undocumented(obj, target: str, c: Contract | None = None) -> list[str]:
    """The key paths of `obj` that the `keys <target>` block does not document."""
    pats = (c or contract()).patterns(target)
    return sorted({"/".join(p) for p, empty in set(leaves(obj)) if not pats.documents(p, empty)})


def files_of(target: str) -> list[Path]:
    """The files under the repository that a file template names."""
    rx = contract().regex(target)
    return sorted(f for f in ROOT.glob(NAME.sub("*", target)) if rx.fullmatch(f.relative_to(ROOT).as_posix()))


def load(f: Path):
    if f.suffix == ".csv":
        with open(f, newline="") as fh:
            return {col: None for col in next(csv.reader(fh), [])}
    return json.loads(f.read_text())


def ran(target: str) -> bool:
    """Whether dvc.lock records a stage output of this template (a stage added after the
    committed results ran has none; e.g. strength-<defender>, whose keys tests/test_strength.py
    checks against this contract on a tiny MagNet)."""
    lock = ROOT / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    rx = contract().regex(target)
    return any(rx.fullmatch(o["path"]) for s in stages.values() for o in s.get("outs", []))


def in_dvc_cache(target: str) -> bool:
    """Whether dvc.yaml declares an output of this template that DVC caches (not git): a fresh
    clone has it only after `dvc pull` or `dvc repro`."""
    doc = ROOT / "dvc.yaml"
    stages = (yaml.safe_load(doc.read_text()) or {}).get("stages", {}) if doc.exists() else {}
    rx = contract().regex(target)
    return any(rx.fullmatch(o if isinstance(o, str) else next(iter(o)))
               and (isinstance(o, str) or next(iter(o.values())).get("cache", True))
               for s in stages.values() for o in s.get("outs", []))


def data_targets() -> list[str]:
    return [t for t in contract().keys if t.endswith((".json", ".csv"))]


# ------------------------------------------------------------------------------ the tests

def test_every_key_of_results_json_is_documented():
    assert undocumented(load(REPORTS / "results.json"), "reports/results.json") == []


def test_an_invented_key_is_undocumented():
    target = "reports/results.json"
    assert undocumented({"config": {"dataset": "mnist5k", "invented_key": 1}}, target) == ["config/invented_key"]
    assert undocumented({"defenders": {"not-a-defender": {"defender": "x"}}}, target) == [
        "defenders/not-a-defender/defender"]
    cell = {"error": 0.1, "ci95": [0.0, 0.2], "n": 10}
    assert undocumented({"defenders": {"alt": {"results": {"pgd-curr": {"0.3": cell}}}}}, target) == []
    assert undocumented({"defenders": {"alt": {"results": {"made-up-attack": {"0.3": cell}}}}}, target) == [
        f"defenders/alt/results/made-up-attack/0.3/{k}" for k in ("ci95", "error", "n")]
    assert undocumented({"defenders": {"alt": {"results": {"pgd-curr": {"zero": cell}}}}}, target) != []
    # one invented key deep inside the real file is the only one reported
    real = copy.deepcopy(load(REPORTS / "results.json"))
    d = next(iter(real["defenders"]))
    real["defenders"][d]["settings"]["invented"] = True
    real["verdicts"].append({"claim": "x", "invented_too": 1})
    assert undocumented(real, target) == [f"defenders/{d}/settings/invented", "verdicts/[]/invented_too"]


def test_an_invented_placeholder_or_macro_fails_loudly():
    doc = "```placeholders\n<a>  x|<b>  # a comment\n<b>  y\n```\n```keys <m>\nk/<a>\n```\n```keys f.json\nr/<m>\n```\n"
    c = parse(doc)
    assert c.placeholders["a"] == "x|(?:y)"
    assert undocumented({"r": {"k": {"x": 1, "y": 2, "z": 3}}}, "f.json", c) == ["r/k/z"]
    with pytest.raises(AssertionError, match="unknown placeholder <zzz>"):
        undocumented({"s": 1}, "g.json", parse(doc + "```keys g.json\ns/<zzz>\n```\n"))
    with pytest.raises(AssertionError, match="cycle"):
        parse("```placeholders\n<a>  <b>\n<b>  <a>\n```\n")


@pytest.mark.parametrize("f", sorted((REPORTS / "eval").glob("*.json")), ids=lambda f: f.name)
def test_each_eval_json_top_level_key_is_documented(f):
    top = {segs[0] for segs in contract().expand("<eval>")}
    assert sorted(set(load(f)) - top) == []


def test_every_file_under_reports_is_listed():
    c = contract()
    listed = [c.regex(t) for t in c.files]
    # reports/inputs/ holds the publish stage's copies under their own paths, each a dependency of
    # that stage (documented where it is under reports/), and the examples figure it draws
    from advgame.report.publish import EXAMPLES, INPUTS
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["publish"]["deps"]
    inputs = [f.relative_to(ROOT / INPUTS).as_posix() for f in (ROOT / INPUTS).rglob("*") if f.is_file()]
    assert [f for f in inputs if f != EXAMPLES and not any(f == d or f.startswith(f"{d}/") for d in deps)] == []
    # a file under reports/runs/ is documented by its published copy (the same bytes)
    found = sorted(f.relative_to(ROOT).as_posix().replace("reports/runs/", "reports/", 1) for f in REPORTS.rglob("*")
                   if f.is_file() and not f.name.startswith(".")  # .<name>.*.tmp: an atomic write in flight
                   and not f.is_relative_to(REPORTS / "own")  # advgame evaluate's, not the pipeline's
                   and not f.is_relative_to(ROOT / INPUTS))
    found += sorted(f.replace("reports/runs/", "reports/", 1) for f in inputs if f.startswith("reports/"))
    assert found, "reports/ is empty"
    assert [f for f in found if not any(rx.fullmatch(f) for rx in listed)] == []
    assert [t for t in c.files if t.endswith((".json", ".csv")) and t not in c.keys] == [], \
        "a listed data file without a `keys` block"


@pytest.mark.parametrize("target", data_targets())
def test_every_key_of_every_result_file_is_documented(target):
    found = files_of(target)
    if not found and not ran(target):  # a stage added since the committed results: its own test checks its keys
        pytest.skip(f"no stage of dvc.lock wrote {target} yet")
    if not found and in_dvc_cache(target):  # not in git: this checkout has not pulled or made it
        pytest.skip(f"{target} is in DVC's cache, not in this checkout")
    assert found, f"no file matches `keys {target}`"
    bad = {f.relative_to(ROOT).as_posix(): u for f in found if (u := undocumented(load(f), target))}
    assert bad == {}


def test_placeholders_cover_the_attack_defense_and_stage_names():
    from advgame import attack_table, defense_table
    from advgame.report.tables import SANITY

    c = contract()
    samples = {"fgsm-{}": "3", "attnet-curr:{}": "mlp", "attnet-transfer:{}": "baseline:conv"}
    attacks = [a.name.format(samples.get(a.name) or (a.choices[0] if a.choices else "x")) if a.family else a.name
               for a in attack_table.ATTACKS]
    defenders = ["adv-fgsm-1" if d == "catmouse" else d for d in defense_table.NAMES]
    # the stages that write reports/stages/<stage>.json (all but `code`, which only hashes files)
    stages = [n for n, s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
              if f"reports/stages/{n}.json" in str(s.get("outs"))]
    for name, values in (("attack", attacks), ("defender", defenders), ("check", list(SANITY)),
                         ("stage", stages)):
        rx = c.regex(f"<{name}>")
        assert [v for v in values if not rx.fullmatch(v)] == [], f"<{name}> of docs/results.md misses these"
