"""The code's layout: one import namespace, no import circle, each stage importing only what comes before it, small
modules, and every package folder shipped by the install."""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path

import pytest
from conftest import REPO_ROOT

#: the import name of each package folder (setup.cfg's `package_dir`; `mra_cir` is the folder of the same name)
FOLDERS = {
    "mra_cir": REPO_ROOT / "mra_cir",
    "mra_cir.modeling_mra_cir": REPO_ROOT / "modeling_mra_cir",
    "mra_cir.dataset_builders": REPO_ROOT / "dataset_builders",
    "mra_cir.trainers": REPO_ROOT / "trainers",
    "mra_cir.evaluation": REPO_ROOT / "evaluation",
}
#: which packages each package may import (the data flow: model -> data -> training / evaluation -> CLI and app)
ALLOWED = {
    "mra_cir.modeling_mra_cir": {"mra_cir.modeling_mra_cir"},
    "mra_cir.dataset_builders": {"mra_cir.modeling_mra_cir", "mra_cir.dataset_builders"},
    "mra_cir.trainers": {"mra_cir.modeling_mra_cir", "mra_cir.dataset_builders", "mra_cir.trainers"},
    "mra_cir.evaluation": {"mra_cir.modeling_mra_cir", "mra_cir.evaluation"},
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Every module of the installed packages: dotted name -> file."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "mra_cir" and parts and parts[0] in {p.split(".")[1] for p in FOLDERS if "." in p}:
                continue
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _package(module: str) -> str:
    return max((p for p in FOLDERS if module == p or module.startswith(p + ".")), key=len)


def test_the_installed_modules_are_the_ones_read_here(graph):
    for name in ("mra_cir.modeling_mra_cir.retrieval", "mra_cir.evaluation.cirr", "mra_cir.dataset_builders.agents"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).resolve() in {p.resolve() for p in _modules().values()}
    assert len(graph) > 60


def test_no_import_circle(graph):
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_each_stage_imports_only_what_comes_before_it(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if _package(module) in ALLOWED and _package(target) not in ALLOWED[_package(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_generic_top_level_import_names():
    """Everything is imported as `mra_cir.<package>`; a bare `import trainers` would claim a generic name."""
    bare = {"trainers", "dataset_builders", "modeling_mra_cir", "evaluation"}
    offenders = []
    for path in [*REPO_ROOT.glob("*/**/*.py")]:
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO_ROOT)}: {n}" for n in names if n.split(".")[0] in bare]
    assert not offenders, offenders


def test_modules_stay_small():
    """No module over ~400 lines, except with a one-line `# size: <reason>` at its top."""
    long = []
    for path in _modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and not lines[0].startswith("# size: "):
            long.append(f"{path.relative_to(REPO_ROOT)}: {len(lines)} lines")
    assert not long, long


def test_setup_cfg_ships_every_package_folder():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    package_dir = dict(
        line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines() if " = " in line
    )
    assert {k: REPO_ROOT / v for k, v in package_dir.items()} == {k: v for k, v in FOLDERS.items() if k != "mra_cir"}
    expected = {
        ".".join([package, *path.parent.relative_to(folder).parts])
        for package, folder in FOLDERS.items()
        for path in folder.rglob("__init__.py")
        if not (package == "mra_cir" and path.parent.relative_to(folder).parts[:1] == ("__pycache__",))
    }
    assert listed == expected, f"packages missing from setup.cfg: {expected - listed}; extra: {listed - expected}"
