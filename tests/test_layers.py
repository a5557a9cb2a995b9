"""The package's floor plan (``../shared/DESIGN.md``), checked on its source: lower floors never
import upper ones, no import cycles between modules, no private name imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_fairquant"

#: Each unit (a top-level module or subpackage) and its floor: a unit may import only units on
#: strictly lower floors. Floors 0 and 1 hold the error type and the helpers everything may use.
FLOORS = {
    "errors": 0,
    "_config": 1, "_format": 1, "_paths": 1, "_atomic": 1, "_lazy": 1, "_coerce": 1, "_distributed": 1, "_compiled": 1,
    "groups": 2,
    "tasks": 3,
    "batching": 4,
    "data": 5,
    "inputs": 6,
    "quantization": 7, "curvature": 7, "metrics": 7,
    "allocation": 8, "deployment": 8,
    "diagnostics": 9, "training": 9, "audit": 9,
    "summary": 10, "results": 10,
    "cards": 11, "hub": 11,
    "report": 12,
    "run": 13,
    "samples": 14,
    "cli": 15,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import, at any depth — skipping
    ``if TYPE_CHECKING:`` blocks, which never run."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if node.level and not node.module:  # from . import x: x may be a submodule
                folder = PACKAGE.parent.joinpath(*target.split("."))
                for n in names:
                    is_module = (folder / f"{n}.py").is_file() or (folder / n).is_dir()
                    found.append((f"{target}.{n}", [], node.lineno) if is_module else (target, [n], node.lineno))
            else:
                found.append((target, names, node.lineno))
    return found


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hf_fairquant" and len(parts) > 1 else None


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "group_disparity" not in p.parts)  # the evaluate module is standalone


def test_every_unit_has_a_floor():
    units = {_unit(_module_name(p)) for p in SOURCES} - {None}
    assert units <= set(FLOORS), f"add these to FLOORS (and DESIGN.md): {sorted(units - set(FLOORS))}"


def upward_imports(sources: dict[Path, str | None]) -> list[str]:
    upward = []
    for path, source in sources.items():
        here = _unit(_module_name(path))
        for target, _, line in _imports(path, source):
            there = _unit(target)
            if here is None or there is None or there == here:
                continue
            if FLOORS[there] >= FLOORS[here]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({here}, floor {FLOORS[here]}) imports "
                              f"{target} ({there}, floor {FLOORS[there]})")
    return upward


def test_no_upward_imports():
    upward = upward_imports(dict.fromkeys(SOURCES))
    assert not upward, "\n".join(upward)


def test_no_private_names_across_modules():
    leaks = []
    for path in SOURCES:
        module = _module_name(path)
        for target, names, line in _imports(path):
            if not target.startswith("hf_fairquant") or target == module:
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private:
                leaks.append(f"{path.relative_to(PACKAGE)}:{line} imports {private} from {target}")
    assert not leaks, "\n".join(leaks)


def test_no_import_cycles():
    modules = {_module_name(p): p for p in SOURCES}
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for target, names, _ in _imports(path):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != m:
                    graph[m].add(candidate)
    # a package's __init__ re-exporting its own submodules is not a cycle of behaviour
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" → ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} → {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("source, message", [
    ("from ..training import FairQuantTrainer\n", "imports hf_fairquant.training"),
    ("def f():\n    from ..diagnostics import explain\n", "imports hf_fairquant.diagnostics"),
    ("from .. import run\n", "imports hf_fairquant.run"),
])
def test_the_rule_catches_an_upward_import(source, message):
    """The check itself can fail: a lower floor (quantization) importing an upper one is reported."""
    probe = PACKAGE / "quantization" / "probe.py"
    found = upward_imports({probe: source})
    assert len(found) == 1 and message in found[0] and "(quantization, floor 7)" in found[0]


# ---------------------------------------------------------------- the two axes
TASK_MATH = ("argmax", "cross_entropy")


def _task_math(path: Path, source: str | None = None) -> list[str]:
    """Calls (or references) of ``argmax``/``cross_entropy``: a prediction or a loss computed here."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} uses {node.attr if isinstance(node, ast.Attribute) else node.id}"
            for node in ast.walk(tree)
            if (isinstance(node, ast.Attribute) and node.attr in TASK_MATH) or (isinstance(node, ast.Name) and node.id in TASK_MATH)]


def test_no_task_math_outside_tasks():
    """Predictions and losses come from the task (``hf_fairquant/tasks/``); the self-contained
    evaluate module is the one other place allowed its own math."""
    found = [hit for path in SOURCES if "tasks" not in path.relative_to(PACKAGE).parts for hit in _task_math(path)]
    assert not found, "\n".join(found)


def test_the_task_math_rule_catches_a_loss():
    probe = PACKAGE / "audit.py"
    assert _task_math(probe, "import torch.nn.functional as F\nloss = F.cross_entropy(x, y)\n")
    assert _task_math(probe, "p = logits.argmax(-1)\n")
    assert not _task_math(probe, "p = task.batch_outputs(out, y)\n")


def _backend_names() -> set[str]:
    from hf_fairquant.quantization import available_backends

    return set(available_backends())


def _named_backends(path: Path, names: set[str], source: str | None = None) -> list[str]:
    """String constants that are a backend's name (docstrings and prose that mention one are fine)."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} names backend {node.value!r}"
            for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]


def test_no_backend_named_outside_backends():
    """Callers ask the registry (get_backend, quantizer_of, artifact_for_folder), never a name."""
    names = _backend_names()
    backends = PACKAGE / "quantization" / "backends"
    found = [hit for path in SOURCES if backends not in path.parents for hit in _named_backends(path, names)]
    assert not found, "\n".join(found)


def test_the_backend_rule_catches_a_name():
    names = _backend_names()
    assert _named_backends(PACKAGE / "cards.py", names, 'if backend == "torchao":\n    pass\n')
    assert not _named_backends(PACKAGE / "cards.py", names, '"""Quantized with torchao: fast."""\n')


LIBRARIES = ("optimum.quanto", "torchao", "bitsandbytes", "onnxruntime")


def test_quantization_libraries_are_imported_only_by_the_quantization_layer():
    """A library is the business of its backend: nothing above ``quantization/`` imports one."""
    found = []
    for path in SOURCES:
        if "quantization" in path.relative_to(PACKAGE).parts:
            continue
        for target, _, line in _imports(path):
            if any(target == lib or target.startswith(lib + ".") for lib in LIBRARIES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not found, "\n".join(found)
