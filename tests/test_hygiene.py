"""Code hygiene of src/advgame (issue 26): short functions, short modules, no dead code, and each
shared report path spelled once (in advgame.names)."""
import ast
import re
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src/advgame"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'file: name (n lines)' of every function or method (nested ones too) over `limit` lines,
    counted from its `def` line to its last line."""
    tree = ast.parse(path.read_text(), str(path))
    return [f"{rel(path)}: {n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > limit]


def test_no_function_over_60_lines():
    assert [f for m in modules() for f in long_functions(m)] == []


def test_a_function_is_counted_from_its_def_to_its_last_line(tmp_path):
    f = tmp_path / "m.py"  # f: 60 lines under a decorator; g: 61 lines, with a nested function
    f.write_text("@dec\ndef f():\n" + "    x = 1\n" * 59 + "\n\ndef g():\n    def h():\n        pass\n"
                 + "    x = 1\n" * 58)
    assert long_functions(f) == [f"{f}: g (61 lines)"]


def test_no_module_over_400_lines():
    over = [f"{rel(m)} ({n} lines)" for m in modules() if (n := len(m.read_text().splitlines())) > MAX_MODULE_LINES]
    assert over == []


def test_vulture_finds_no_dead_code():
    if importlib.util.find_spec("vulture") is None:
        pytest.fail("vulture is not installed: make .venv/.installed (or pip install -e '.[test]')")
    whitelist = [str(w.relative_to(ROOT)) for w in [ROOT / "tests/vulture_whitelist.py"] if w.exists()]
    run = subprocess.run([sys.executable, "-m", "vulture", "src", "stages", *whitelist, "--min-confidence", "80"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr


@pytest.mark.parametrize("literal", ["reports/stages", "reports/seeds.json"])
def test_each_shared_path_is_spelled_once(literal):
    # names.STAGE_REPORTS / names.stage_report(name) and names.SEEDS: every other module (code,
    # docstrings and comments alike) goes through them
    files = sorted([*PKG.rglob("*.py"), *(ROOT / "stages").rglob("*.py")])
    found = [f"{rel(f)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
             for _ in range(line.count(literal))]
    assert len(found) == 1 and found[0].startswith("src/advgame/names.py:"), found


def test_the_lock_pins_every_dependency_with_hashes():
    # make installs requirements.lock with --require-hashes: every package (the project's
    # dependencies and theirs) pinned, each with the sha256 of its files, and the pins within
    # pyproject.toml's ranges
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (ROOT / "requirements.lock").read_text()
    pins, hashes = {}, {}
    for block in re.split(r"\n(?=[A-Za-z])", text):  # one block per package: its pin, then its hashes
        m = re.match(r"([A-Za-z0-9._-]+)==([^ \\\n;]+)", block)
        if m:
            name = canonicalize_name(m[1])
            pins[name] = m[2]
            hashes[name] = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
    assert pins and all(hashes[n] for n in pins), [n for n in pins if not hashes[n]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for r in wanted:
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} is not in requirements.lock: make lock"
        assert r.specifier.contains(pins[name], prereleases=True), f"{r.name}=={pins[name]} is outside {r.specifier}"
