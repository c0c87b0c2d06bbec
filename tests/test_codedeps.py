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


def test_a_scripts_code_hash_moves_with_the_modules_it_runs_and_only_those(tmp_path):
    # pipeline.codehash: what the `code` stage writes and every other stage declares as a param
    import json
    import os

    from advgame.pipeline import codehash

    pkg = make_pkg(tmp_path / "src")
    (pkg / "progress.py").write_text("import tqdm\n")  # logging only: in NOT_DEPS
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/a.py").write_text("from advgame.defenses import magnet\nfrom advgame import progress\n")
    (tmp_path / "stages/b.py").write_text("from advgame import config\n")
    (tmp_path / "stages/check_params.py").write_text("from advgame import config\n")
    (pkg / "pipeline").mkdir()
    for f in codehash.GENERATOR:
        (tmp_path / f).write_text("# the generator\n")
    before = codehash.table(tmp_path)
    assert before["a"]["files"] == ["stages/a.py", "src/advgame/config.py",
                                    "src/advgame/defenses/__init__.py", "src/advgame/defenses/magnet.py",
                                    "src/advgame/defenses/sib.py", "src/advgame/lazy.py", "src/advgame/names.py"]
    assert set(codehash.GENERATOR) <= set(before["check_params"]["files"])
    assert codehash.sources(tmp_path) == sorted(
        [*(str(f.relative_to(tmp_path)) for f in pkg.rglob("*.py")), "stages/a.py", "stages/b.py",
         "stages/check_params.py"])

    def edited(path, text):
        (tmp_path / path).write_text(text)
        os.utime(tmp_path / path, ns=(1, os.stat(tmp_path / path).st_mtime_ns + 10**9))  # the walker caches by mtime
        return {s: codehash.table(tmp_path)[s]["hash"] != before[s]["hash"] for s in before}

    assert edited("src/advgame/progress.py", "import tqdm  # new bar\n") == dict.fromkeys(before, False)
    assert edited("src/advgame/defenses/sib.py", "import advgame.lazy\nX = 1\n") == {
        "a": True, "b": False, "check_params": False}
    assert edited(codehash.GENERATOR[0], "# the generator, changed\n")["check_params"]
    cwd = os.getcwd()
    try:  # the stage writes it where DVC runs it
        assert codehash.main(tmp_path) == 0
        assert json.loads((tmp_path / codehash.FILE).read_text()) == codehash.table(tmp_path)
    finally:
        os.chdir(cwd)



def test_what_only_a_module_left_out_of_the_code_hash_imports_is_no_stages_code(tmp_path):
    # the generator (left out: NOT_DEPS) imports report code; preflight, in every stage, imports the
    # generator: that report code must not join every stage's hash, but is check_params' code
    from advgame.pipeline import codehash

    pkg = make_pkg(tmp_path / "src")
    (pkg / "pipeline").mkdir()
    (pkg / "pipeline/__init__.py").write_text("")
    (pkg / "pipeline/generator.py").write_text("from advgame.defenses import magnet\n")
    (pkg / "pipeline/dvc_plots.py").write_text("")
    (pkg / "pipeline/preflight.py").write_text("from advgame import config\nfrom advgame.pipeline import generator\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/a.py").write_text("from advgame.pipeline import preflight\n")
    (tmp_path / "stages/check_params.py").write_text("from advgame.pipeline import preflight\n")
    table = codehash.table(tmp_path)
    assert "src/advgame/defenses/magnet.py" not in table["a"]["files"]
    assert "src/advgame/pipeline/preflight.py" in table["a"]["files"]
    assert "src/advgame/defenses/magnet.py" in table["check_params"]["files"]
