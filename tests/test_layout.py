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
    "mra_cir.retrieval": REPO_ROOT / "retrieval",
    "mra_cir.dataset_builders": REPO_ROOT / "dataset_builders",
    "mra_cir.trainers": REPO_ROOT / "trainers",
    "mra_cir.evaluation": REPO_ROOT / "evaluation",
}
#: which packages each package may import (the data flow: model -> embedding and search -> data -> training / evaluation
#: -> library jobs (`mra_cir.pipelines`) -> CLI and app)
ALLOWED = {
    "mra_cir.modeling_mra_cir": {"mra_cir.modeling_mra_cir"},
    "mra_cir.retrieval": {"mra_cir.modeling_mra_cir", "mra_cir.retrieval"},
    "mra_cir.dataset_builders": {"mra_cir.modeling_mra_cir", "mra_cir.retrieval", "mra_cir.dataset_builders"},
    "mra_cir.trainers": {
        "mra_cir.modeling_mra_cir",
        "mra_cir.retrieval",
        "mra_cir.dataset_builders",
        "mra_cir.trainers",
    },
    "mra_cir.evaluation": {"mra_cir.modeling_mra_cir", "mra_cir.retrieval", "mra_cir.evaluation"},
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
    for name in ("mra_cir.retrieval.encoding", "mra_cir.evaluation.cirr", "mra_cir.dataset_builders.agents"):
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


#: what a command (`mra_cir/commands/*.py`) may import from the project: the jobs it calls and the argument
#: dataclasses it parses; training, mining, indexing and evaluation logic is reached only through `mra_cir.pipelines`
COMMAND_MAY_IMPORT = (
    "mra_cir.pipelines",
    "mra_cir.commands",
    "mra_cir.app",
    "mra_cir.quickstart",
    "mra_cir.modeling_mra_cir.lavis_conversion",
    "mra_cir.trainers.training_args",
)
#: third-party packages that do the work; a command that imports one is doing the work itself
COMMAND_MAY_NOT_IMPORT = ("torch", "datasets", "accelerate", "faiss", "numpy", "peft", "safetensors")
#: the layer above the library: nothing below it may import it, and the jobs never import the commands or the CLI
UPPER = ("mra_cir.commands", "mra_cir.cli", "mra_cir.pipelines")


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_commands_only_parse_arguments_and_call_a_job(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("mra_cir.commands.")
        for target in targets
        if not _in(target, COMMAND_MAY_IMPORT)
    ]
    for path in (REPO_ROOT / "mra_cir" / "commands").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            wrong += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in COMMAND_MAY_NOT_IMPORT]
    assert not wrong, "\n".join(wrong)
    assert len([m for m in graph if m.startswith("mra_cir.commands.")]) >= 12


def test_no_upward_arrow_into_the_jobs_or_the_commands(graph):
    """The library stages, the quickstart and the app never import the commands or the CLI; the library stages never
    import the jobs (`mra_cir.pipelines`); the jobs never import the commands."""
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            below_commands = not _in(module, ("mra_cir.commands", "mra_cir.cli"))
            if below_commands and _in(target, ("mra_cir.commands", "mra_cir.cli")):
                wrong.append(f"{module} imports {target}")
            if _package(module) in ALLOWED and _in(target, UPPER):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_generic_top_level_import_names():
    """Everything is imported as `mra_cir.<package>`; a bare `import trainers` would claim a generic name."""
    bare = {"trainers", "dataset_builders", "modeling_mra_cir", "evaluation", "retrieval"}
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


#: helpers that once had several drifting copies: each is defined exactly once in the installed packages
ONE_DEFINITION = (
    "shard_bounds", "IMAGE_EXTENSIONS", "parse_window", "parse_windows", "distributed_state", "recall_at_k",
    "file_sha256", "benchmark_paths", "AgentArguments", "list_images", "from_images",
)  # fmt: skip
#: removed: a second copy (`slice_bounds`), dead code, and a test-only reference that lives in tests/ now
NO_DEFINITION = ("slice_bounds", "folder_state", "clean_caches", "_Rows", "brute_force_token_similarity")


def test_each_shared_helper_is_defined_once():
    definitions: dict[str, list[str]] = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for symbol in defined:
                definitions.setdefault(symbol, []).append(name)
    assert {s: definitions.get(s, []) for s in ONE_DEFINITION if len(definitions.get(s, [])) != 1} == {}
    assert {s: definitions[s] for s in NO_DEFINITION if s in definitions} == {}
