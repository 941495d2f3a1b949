"""The house's joints, read from the code: core/ is the ground floor, drivers/, rules/ and store/ the
rooms on it, gatewayd/ the top floor that composes them.

Imports are read with `ast`, so those inside functions (the lazy ones) count as much as those at the
top: a cycle hidden in a function still breaks the first import that happens to run it (imports for
type checking only count too: they name the same dependency). Importing
`a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so those count as imported too (except the
importer's own packages, which are always initialised before it): that is how `import gatewayd.systemd`
once failed, through gatewayd/config/__init__.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUND, TOP = "core", "gatewayd"
ROOMS = ("drivers", "rules", "store")
PLATFORM = "gatewayd.platform"
BATCH_FORMAT = "core.batchformat"


@cache
def packages() -> tuple[str, ...]:
    """The project's top-level packages, as pyproject.toml ships them: a new one is checked too."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        include = tomllib.load(file)["tool"]["setuptools"]["packages"]["find"]["include"]
    return tuple(pattern.rstrip("*") for pattern in include)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def resolve(name: str) -> str | None:
    """The project module an import name lands in (a name inside a module resolves to the module)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> dict[str, bool]:
    """Project modules `module` imports (at any depth of its code) -> whether only inside functions."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, bool] = {}

    def visit(node: ast.AST, in_function: bool) -> None:
        targets = []
        if isinstance(node, ast.Import):
            targets = [resolve(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [resolve(f"{base}.{alias.name}") or resolve(base) for alias in node.names]
        for target in targets:
            if target and target != module:
                found[target] = found.get(target, True) and in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def runs_on_import(module: str) -> set[str]:
    """What importing `module` may run: each module it imports and their packages' __init__ files,
    except its own packages (they are initialised before it, whatever it imports)."""
    own = {".".join(module.split(".")[:depth]) for depth in range(1, module.count(".") + 1)}
    edges = set()
    for target in imports(module):
        parts = target.split(".")
        edges |= {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)} - own - {module}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(edges):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(target) == 1:
                return path[path.index(target):] + [target]
            elif target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(sorted(edges[target])))
    return None


def test_the_module_list_and_the_import_reader_see_what_they_must():
    assert set(packages()) >= {GROUND, TOP, *ROOMS}
    assert {"core.types", "core.schema", "gatewayd.systemd", "gatewayd.platform.verify"} <= set(modules())
    # a lazy import, inside a function, is read and marked so
    assert imports("gatewayd.cliplatform")["gatewayd.platform.verify"] is True
    assert imports("gatewayd.config.load")["gatewayd.systemd"] is False


def test_drivers_rules_store_and_the_ground_floor_never_import_gatewayd():
    upward = [f"{module} -> {target}" for module in modules() if top(module) in (GROUND, *ROOMS)
              for target in imports(module) if top(target) == TOP]
    assert upward == [], "the rooms build on core/, never on the floor above them"


def test_the_ground_floor_imports_nothing_of_the_project_but_itself():
    above = [f"{module} -> {target}" for module in modules() if top(module) == GROUND
             for target in imports(module) if top(target) != GROUND]
    assert above == []


def test_no_import_cycles_among_project_modules():
    edges = {module: runs_on_import(module) for module in modules()}
    assert find_cycle(edges) is None


def test_the_cycle_finder_finds_a_cycle_through_a_package_init():
    """The shape that broke `import gatewayd.systemd`: systemd imported config.model, whose package's
    __init__ imports the loader, which imported systemd back."""
    edges = {"a.systemd": {"a.config", "a.config.model"}, "a.config": {"a.config.load"},
             "a.config.model": set(), "a.config.load": {"a.systemd"}}
    assert find_cycle(edges) == ["a.config", "a.config.load", "a.systemd", "a.config"]
    edges["a.config.load"] = set()
    assert find_cycle(edges) is None


def test_the_platform_tools_depend_only_on_the_batch_format_and_the_daemon_never_imports_them():
    platform = {module for module in modules() if module.startswith(PLATFORM)}
    assert {f"{PLATFORM}.{tool}" for tool in ("receiver", "verify", "capture", "export", "watch")} <= platform
    reach = {target for module in platform for target in imports(module) if target not in platform}
    assert {target for target in reach if target != BATCH_FORMAT and top(target) != GROUND} == set()
    importers = {module: lazy for module in modules() if module not in platform
                 for target, lazy in imports(module).items() if target in platform}
    assert importers == {"gatewayd.cliplatform": True}, "only the CLI imports them, inside the commands that use them"


# Runs in a fresh interpreter: third-party and standard modules first (they cannot depend on the project),
# then a fork per project module, so that each child imports its module with no project module loaded.
IMPORT_EACH = r"""
import importlib, os, sys
preload, rest = sys.argv[1].split(","), sys.argv[2:]
modules, project = rest[:rest.index("--")], rest[rest.index("--") + 1:]
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the child that needs it imports it again and reports the failure
assert not [name for name in sys.modules if name.split(".")[0] in project], "a project module was preloaded"
for module in modules:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException as exc:
            print(f"{module}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def outside_modules() -> list[str]:
    """Modules the project imports that are not its own: what every child may share without harm."""
    names = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(name for name in names if top(name) not in packages() and name != "__future__")


def test_every_project_module_imports_on_its_own_in_a_fresh_interpreter():
    """A module that imports only because another was imported first (a cycle, a missing import) fails
    the first program that imports it alone, such as `python -c "import gatewayd.systemd"`."""
    names = sorted(module for module in modules() if not module.endswith("__main__"))
    halves = [names[0::2], names[1::2]]  # two interpreters: the machine has at least two cores
    runs = [subprocess.Popen([sys.executable, "-c", IMPORT_EACH, ",".join(outside_modules()), *half, "--",
                              *packages()], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}) for half in halves]
    failures = [run.communicate(timeout=240)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], failures
    assert "".join(failures) == ""
