"""The layer contracts of docs/ARCHITECTURE.md, checked on the source (ast, no import of the modules).

Every import counts, at module level or inside a function (a lazy import hides a dependency, it does not
remove it). Imports under `if TYPE_CHECKING:` are exempt: they exist for the type checker only and load
nothing at run time.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "carbonrun"

# The bottom layer: small modules every other layer may use, which use nothing above them.
FOUNDATION = {"carbonrun", "errors", "validate", "units", "timefmt", "paths", "files", "redact", "sanitize", "net"}
# What each layer may import (besides itself and FOUNDATION). Data flows one way:
# collectors -> measure (session, engine) -> accounting -> store -> report; cli on top of everything.
ALLOWED: Dict[str, set] = {
    "collectors": set(),
    "intensity": {"settings", "config"},
    "settings": {"config", "intensity"},  # intensity/providers/__init__.py: the provider names only
    "config": {"settings", "store"},
    "store": {"record"},
    "record": {"collectors", "intensity"},
    "accounting": {"collectors", "record", "intensity"},
    "report": {"record", "intensity", "accounting"},
    "metrics": {"record", "measure"},
    "measure": {"collectors", "accounting", "intensity", "store", "record", "settings", "config", "metrics"},
}
# Layers above measure may use everything except the CLI and each other's insides.
UPPER = {"gate", "sweep", "api", "doctor"}
UPPER_MAY_NOT = {"cli", "gate", "sweep", "api", "doctor"}


class Import(NamedTuple):
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    names: Tuple[str, ...]  # for `from target import a, b`
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set:
    lines: set = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


@lru_cache(maxsize=None)
def imports() -> Tuple[Import, ...]:
    out: List[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        exempt = _type_checking_lines(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in exempt:
                continue
            if isinstance(node, ast.Import):
                out += [Import(module, a.name, (), node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = tuple(a.name for a in node.names)
                # `from carbonrun import paths, __version__`: a name may be a module or a name in one
                submodules = tuple(n for n in names if _is_known_module(f"{base}.{n}"))
                out += [Import(module, f"{base}.{n}", (), node.lineno) for n in submodules]
                rest = tuple(n for n in names if n not in submodules)
                if rest:
                    out.append(Import(module, base, rest, node.lineno))
    return tuple(out)


def layer(module: str) -> str:
    """carbonrun.store.sqlite -> store; carbonrun.paths -> paths; carbonrun -> carbonrun."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def ours(imps: Tuple[Import, ...]) -> List[Import]:
    return [i for i in imps if i.target == "carbonrun" or i.target.startswith("carbonrun.")]


def where(i: Import) -> str:
    return f"{i.module}:{i.line} imports {i.target}"


def _is_known_module(target: str) -> bool:
    rel = Path(*target.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def test_the_checker_sees_function_level_and_from_imports():
    found = {(i.module, i.target) for i in imports()}
    assert ("carbonrun.cli.doctor", "carbonrun.doctor") in found  # from ... import at module level
    assert ("carbonrun.intensity.carbon", "carbonrun.intensity.providers.base") in found  # inside a function
    assert all(layer(i.target) for i in ours(imports()))


def test_the_core_never_imports_the_cli():
    bad = [where(i) for i in ours(imports())
           if layer(i.target) == "cli" and layer(i.module) not in ("cli", "__main__")]
    assert bad == [], "the core must not depend on the terminal side:\n" + "\n".join(bad)


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_lower_layers_import_only_what_is_below_them(lower):
    allowed = ALLOWED[lower] | FOUNDATION | {lower}
    bad = [where(i) for i in ours(imports()) if layer(i.module) == lower and layer(i.target) not in allowed]
    assert bad == [], f"{lower} may import only {sorted(allowed)}:\n" + "\n".join(bad)


def test_foundation_modules_import_only_each_other():
    bad = [where(i) for i in ours(imports())
           if layer(i.module) in FOUNDATION - {"carbonrun"} and layer(i.target) not in FOUNDATION]
    assert bad == [], "\n".join(bad)


def test_collectors_never_reach_the_store():
    bad = [where(i) for i in ours(imports()) if layer(i.module) == "collectors" and layer(i.target) == "store"]
    assert bad == []


def test_reports_render_records_without_measuring():
    bad = [where(i) for i in ours(imports())
           if layer(i.module) == "report" and layer(i.target) in ("measure", "store", "collectors")]
    assert bad == []


def test_upper_layers_are_independent_of_each_other_and_of_the_cli():
    bad = [where(i) for i in ours(imports())
           if layer(i.module) in UPPER and layer(i.target) in UPPER_MAY_NOT - {layer(i.module)}]
    assert bad == [], "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = [f"{i.module}:{i.line} imports {n} from {i.target}" for i in ours(imports()) for n in i.names
           if n.startswith("_") and not n.startswith("__") and i.target != i.module]
    assert bad == [], "\n".join(bad)


def _bound_here(tree: ast.AST) -> set:
    """Every name a module defines or assigns (functions, classes, variables, attributes, arguments)."""
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
    return names


def _foreign_imports(tree: ast.AST) -> set:
    """Names bound to modules outside carbonrun (the standard library's documented `os._exit` and kin)."""
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names if not a.name.startswith("carbonrun")}
        elif isinstance(n, ast.ImportFrom) and not (n.module or "").startswith("carbonrun") and not n.level:
            names |= {a.asname or a.name for a in n.names}
    return names


def test_no_module_reaches_into_another_modules_private_attributes():
    """`store._owner_alive(...)` or `regions._ISO3` is the same breach as importing the private name: a
    `_name` read on anything but self/cls that this module itself never defines belongs to someone else."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        own, foreign = _bound_here(tree), _foreign_imports(tree)
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")):
                continue
            base = ast.unparse(n.value)
            if base in ("self", "cls") or base.split(".")[0] in foreign or n.attr in own:
                continue
            bad.append(f"{_module_name(path)}:{n.lineno} uses {base}.{n.attr}")
    assert bad == [], "\n".join(bad)


def test_every_import_of_ours_names_a_module_that_exists():
    bad = [where(i) for i in ours(imports()) if not _is_known_module(i.target)
           and not _is_known_module(i.target.rpartition(".")[0])]
    assert bad == [], "\n".join(bad)


def test_every_function_level_import_says_why():
    """A lazy import hides a dependency, so it must earn its place: start-up time, an optional or broken
    binding, a cycle. The reason goes on its line, or on a comment line above its group of imports."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if not isinstance(sub, (ast.Import, ast.ImportFrom)) or "#" in lines[sub.lineno - 1]:
                    continue
                j = sub.lineno - 2
                while j >= 0 and (not lines[j].strip() or lines[j].strip().startswith(("from ", "import "))) \
                        and "#" not in lines[j]:
                    j -= 1
                if not (j >= 0 and lines[j].strip().startswith("#")):
                    bad.append(f"{_module_name(path)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    assert bad == [], "move these to the top of the module, or say why they are lazy:\n" + "\n".join(sorted(set(bad)))


def test_the_start_up_path_loads_no_heavy_module():
    """What `carbonrun COMMAND` imports before the command starts: none of these (each costs start-up time,
    and the fast path exists to avoid them). Lazy imports elsewhere are there to keep this true."""
    code = ("import sys, carbonrun, carbonrun.cli, carbonrun.settings, carbonrun.cli.fast, carbonrun.cli.options; "
            "heavy = ('rich', 'urllib.request', 'http.client', 'sqlite3', 'psycopg', 'pynvml', 'click'); "
            "print(' '.join(m for m in heavy if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == []
