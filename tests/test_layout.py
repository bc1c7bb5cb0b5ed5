"""The house rules, checked from the source so a fresh clone checks itself: every module sits in one
layer and imports only from its own layer or those below (cli -> workflows -> core -> common), no
import circle, no file over 300 lines, no function over 60 lines outside the CLI, and no position method
named outside positions/ (attention, probes and reports reach a method through its interface)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "posbench"
LAYERS = {  # lowest first; a module's layer is that of the longest prefix naming it (dotted: a package's part)
    "common": ["common", "errors", "fileio", "progress"],
    "core": ["model", "positions", "data", "runs", "evaluation.scoring", "evaluation.stats",
             "evaluation.context_use", "evaluation", "experiments.presets", "tasks.data", "tasks.generators",
             "pretrained"],
    "workflows": ["train", "sample", "evaluation.extrapolate", "evaluation.heads", "experiments", "tasks",
                  "pretrained.evaluate", "pretrained.heads", "pretrained.compare"],
    "interface": ["cli", "__init__", "__main__"],  # the command line and the package's own exports
}
RANK = {layer: k for k, layer in enumerate(LAYERS)}
NOT_METHODS = {"positions", "positions.base", "positions.ids", "positions.rope_scaling"}


def modules() -> dict[str, Path]:
    """'model', 'positions.alibi', 'cli.compare', '__init__' ... -> file."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__") if name != "__init__" else name] = path
    return out


def layer(name: str) -> str:
    matches = [(len(p), layer_name) for layer_name, prefixes in LAYERS.items() for p in prefixes
               if name == p or name.startswith(p + ".")]
    if matches:
        return max(matches)[1]
    raise AssertionError(f"posbench/{name}: in no layer; add it to LAYERS in tests/test_layout.py")


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The posbench modules `name` imports (relative imports resolved), itself and its parents left out."""
    package = "" if name == "__init__" else name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = ".".join(x for x in (base, node.module) if x)
            elif (node.module or "").startswith("posbench"):
                target = node.module.removeprefix("posbench").lstrip(".")
            else:
                continue
            found |= {t for t in (target, *(f"{target}.{a.name}".lstrip(".") for a in node.names)) if t in known}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("posbench.") for a in node.names if a.name.removeprefix("posbench.") in known}
    return {t for t in found if t != name and not name.startswith(t + ".")}


MODULES = modules()
GRAPH = {name: imports(name, path, MODULES) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    mine = RANK[layer(name)]
    upward = [t for t in GRAPH[name] if RANK[layer(t)] > mine]
    assert not upward, f"posbench/{name} ({layer(name)}) imports {upward} from a layer above"


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path[path.index(nxt):], nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_files_and_functions_stay_small():
    long_files = [f"{p} {n}" for p in MODULES.values() if (n := len(p.read_text().splitlines())) > 300]
    long_functions = [f"{p}:{node.lineno} {node.name} {node.end_lineno - node.lineno + 1}"
                      for name, p in MODULES.items() if not name.startswith("cli")
                      for node in ast.walk(ast.parse(p.read_text()))
                      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.end_lineno - node.lineno + 1 > 60]
    assert not long_files and not long_functions, (long_files, long_functions)


def test_no_method_named_outside_positions():
    methods = {m for m in MODULES if m.startswith("positions.") and m not in NOT_METHODS}
    named = [f"{name} imports {t}" for name, targets in GRAPH.items() if not name.startswith("positions")
             for t in targets & methods]
    assert not named, named
