"""The import walker (advgame.pipeline.codedeps) that declares each stage's code dependencies, and the
one-way import rule it checks: no module of advgame imports itself back through others."""
from pathlib import Path

from advgame.pipeline import codedeps

ROOT = Path(__file__).resolve().parents[1]


def make_pkg(tmp_path: Path) -> Path:
    pkg = tmp_path / "advgame"
    (pkg / "defenses").mkdir(parents=True)
    files = {
        "__init__.py": "class UserError(Exception): pass\n",
        "config.py": "import yaml\n",
        "names.py": "from . import config, UserError\n",
        "lazy.py": "def f():\n    from .names import x\n",
        "defenses/__init__.py": '"""doc"""\n',
        "defenses/magnet.py": "from .. import UserError\nfrom ..config import X\nfrom . import sib\n",
        "defenses/sib.py": "import advgame.lazy\n",
        "user.py": "from advgame.defenses import magnet\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg


def test_walker_follows_subpackages_relative_and_lazy_imports(tmp_path):
    pkg = make_pkg(tmp_path)
    assert codedeps.imports(pkg / "defenses/magnet.py", pkg) == {"config", "defenses", "defenses.sib"}
    assert codedeps.imports(pkg / "names.py", pkg) == {"config"}
    assert codedeps.imports(pkg / "lazy.py", pkg) == {"names"}
    assert codedeps.closure(pkg / "user.py", pkg) == {"defenses", "defenses.magnet", "defenses.sib",
                                                      "config", "lazy", "names"}
    script = tmp_path / "stage.py"  # a stage script outside the package: absolute imports only
    script.write_text("from advgame.defenses.sib import y\nfrom .x import z\n")
    assert codedeps.imports(script, pkg) == {"defenses", "defenses.sib"}
    assert codedeps.module_file("defenses", pkg) == pkg / "defenses/__init__.py"


def test_find_cycle_reports_one():
    assert codedeps.find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert codedeps.find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_advgame_imports_run_one_way():
    g = codedeps.graph()
    assert "defenses.magnet" in g and "defense_table" in g
    assert codedeps.find_cycle(g) is None, codedeps.find_cycle(g)


def test_the_tables_and_names_import_nothing_that_imports_them_back():
    # config reads the registry's names for its choices: the registry must stay a plain table
    g = codedeps.graph()
    assert g["defense_table"] == set() and g["attack_table"] == set()
    assert g["names"] <= {"config", "defense_table", "attack_table"}


# the package's layers, top to bottom; a module outside these subpackages is the foundation
# (config, names, the tables, data, models, training, artifacts, ...) below all of them; the
# `advgame` command (cli.py) is above them all
LAYERS = ("cli", "pipeline", "report", "evaluation", "defenses", "attacks", "")


def layer(module: str) -> int:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else len(LAYERS) - 1


def upward_imports(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, n) for m, ns in g.items() for n in ns
                  if n and layer(n) < layer(m))


def test_imports_only_point_down_the_layers():
    assert upward_imports(codedeps.graph()) == []


def test_an_upward_import_is_caught(tmp_path):
    pkg = tmp_path / "advgame"
    for d in ("attacks", "report"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "report/tables.py").write_text("")
    (pkg / "attacks/pgd.py").write_text("from ..report import tables\n")
    assert ("attacks.pgd", "report.tables") in upward_imports(codedeps.graph(pkg))


def test_the_module_that_runs_the_attack_table_depends_on_every_attack_it_names():
    # attack_table names runners as "module:function" and crosseval imports them by name: an edit
    # of attacks/apgd.py must rerun the evaluations, so the eval stage declares every such module
    from advgame import attack_table
    named = {f"attacks.{a.run.partition(':')[0]}" for a in attack_table.ATTACKS if isinstance(a.run, str)}
    assert {"attacks.apgd", "attacks.square", "attacks.pgd", "attacks.fgsm"} <= named
    assert named <= codedeps.imports(codedeps.module_file("evaluation.crosseval"))
    deps = codedeps.closure(ROOT / "stages/evaluate.py")
    assert named <= deps
    # and only there: a training stage does not rerun when an evaluation attack changes
    assert "attacks.square" not in codedeps.closure(ROOT / "stages/baseline.py")


def test_a_module_loaded_by_name_is_found_in_a_table(tmp_path):
    pkg = make_pkg(tmp_path)
    (pkg / "attacks").mkdir()
    (pkg / "attacks/__init__.py").write_text("")
    (pkg / "attacks/zap.py").write_text("def run(c): pass\n")
    (pkg / "attack_table.py").write_text('T = ["zap:run", "nothere:run", "not a module"]\n')
    (pkg / "evaluation").mkdir()
    (pkg / "evaluation/__init__.py").write_text("")
    (pkg / "evaluation/crosseval.py").write_text("from advgame import attack_table\n")
    assert codedeps.imports(pkg / "evaluation/crosseval.py", pkg) == {"attack_table", "attacks", "attacks.zap"}
