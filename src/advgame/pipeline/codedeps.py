"""Which advgame modules a file imports, read from its source with ast (nothing is imported).

Modules are named relative to the package with dots: `config`, `defenses.magnet`. The generator
uses this to declare each stage's code dependencies; a test uses it to check that imports run
one way (no cycle). Imports inside functions count: they run when the function does.

Modules loaded by name count too: the attack table names each attack's function as
"module:function" under advgame.attacks, and the module that runs the table's entries
(`BY_NAME`: evaluation.crosseval) imports them when an attack runs, so it depends on every
module the table names (else an edit of attacks/apgd.py would not rerun an evaluation).
"""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent  # src/advgame
# module that imports by name -> (the table whose "module:function" strings it runs, their package)
BY_NAME = {"evaluation.crosseval": ("attack_table", "attacks")}


def module_file(mod: str, pkg: Path = PKG) -> Path | None:
    """'defenses.magnet' -> .../defenses/magnet.py; a subpackage -> its __init__.py; else None."""
    if not mod:
        return None
    base = pkg.joinpath(*mod.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


def module_name(path: Path, pkg: Path = PKG) -> str | None:
    """The dotted name of a file inside the package (None outside it; '' for the package itself)."""
    try:
        rel = Path(path).resolve().relative_to(pkg)
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(mod: str) -> list[str]:
    """Subpackages that importing `mod` runs first: 'defenses.magnet' -> ['defenses']."""
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports(path: Path, pkg: Path = PKG) -> set[str]:
    """advgame modules the file imports: `import advgame.x`, `from advgame[.x] import y`, and
    relative imports inside the package (`.x`, `..x`), with the subpackages they run."""
    path = Path(path).resolve()
    found = set(_imports(path, Path(pkg), path.stat().st_mtime_ns))
    if (loader := BY_NAME.get(module_name(path, pkg))) is not None:
        table = module_file(loader[0], pkg)
        found |= set(_named(table, loader[1], Path(pkg), table.stat().st_mtime_ns)) if table else set()
    return found


@lru_cache(maxsize=None)
def _named(table: Path, package: str, pkg: Path, _mtime: int) -> frozenset[str]:
    """The modules of `package` that the table's "module:function" string constants name."""
    found = set()
    for node in ast.walk(ast.parse(Path(table).read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r"(\w+):(\w+)", node.value)
            if m and module_file(f"{package}.{m.group(1)}", pkg):
                found.update([package, f"{package}.{m.group(1)}"])
    return frozenset(found)


@lru_cache(maxsize=None)  # the generator asks for the same files once per stage; keyed by mtime
def _imports(path: Path, pkg: Path, _mtime: int) -> frozenset[str]:
    here = module_name(path, pkg)
    if here is not None and Path(path).name != "__init__.py":
        here = ".".join(here.split(".")[:-1])  # a module's relative imports start at its package
    found: set[str] = set()

    def add(mod: str):
        if module_file(mod, pkg):
            found.update(m for m in [*_parents(mod), mod] if module_file(m, pkg))

    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("advgame."):
                    add(a.name.removeprefix("advgame."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if here is None:
                    continue
                base = here.split(".") if here else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "advgame" or (node.module or "").startswith("advgame."):
                mod = node.module.removeprefix("advgame").lstrip(".")
            else:
                continue
            for a in node.names:  # `from advgame.defenses import magnet` imports a module
                sub = f"{mod}.{a.name}" if mod else a.name
                add(sub if module_file(sub, pkg) else mod)
    return frozenset(found)


def closure(path: Path, pkg: Path = PKG, stop: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Every advgame module the file runs, transitively; a module in `stop` is listed but what it
    imports is not followed."""
    todo, seen = list(imports(path, pkg)), set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [] if m in stop else imports(module_file(m, pkg), pkg)
    return seen


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the modules it imports, for every module of the package."""
    return {module_name(f, pkg): imports(f, pkg) - {module_name(f, pkg)} for f in sorted(pkg.rglob("*.py"))}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first = last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None
