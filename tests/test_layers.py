"""The layers of the code, as one sentence a newcomer can repeat and a test that holds it:

the foundation `vien` (runtime, protos, store, embedding, lexical, text/language id, documents, the runtime
encoder) imports no service and no tool; each service `vien_<name>` imports only the foundation (and itself);
the tools `vien_tools` (CLI, evaluation, model building) sit on top; and no first-party modules import each
other in a cycle."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "services"
FOUNDATION, TOOLS = "vien", "vien_tools"


def _modules(root: Path) -> dict[str, set[str]]:
    """module -> first-party modules it imports (anywhere in the file, lazy imports included)."""
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        if rel.parts[:2] == ("vien", "v1"):          # generated protobuf code
            continue
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        out[name] = {d for d in deps if d.split(".")[0] in packages}
    return out


def layer_violations(root: Path) -> list[str]:
    bad = []
    for mod, deps in sorted(_modules(root).items()):
        top = mod.split(".")[0]
        for dep in sorted(deps):
            dtop = dep.split(".")[0]
            if top == FOUNDATION and dtop != FOUNDATION:
                bad.append(f"foundation {mod} imports {dep}")
            elif top not in (FOUNDATION, TOOLS) and dtop not in (FOUNDATION, top):
                bad.append(f"service {mod} imports {dep}")
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    mods = _modules(root)
    known = set(mods)

    def resolve(dep: str) -> str | None:  # `from a.b import c` names module a.b.c, or a name inside a.b
        while dep and dep not in known:
            dep = dep.rpartition(".")[0]
        return dep or None

    graph = {m: {r for d in deps if (r := resolve(d)) and r != m and not m.startswith(r + ".")}
             for m, deps in mods.items()}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_the_foundation_imports_no_service_and_services_import_only_the_foundation() -> None:
    assert layer_violations(ROOT) == []


def test_no_first_party_import_cycles() -> None:
    assert import_cycles(ROOT) == []


def test_the_check_catches_a_planted_upward_import_and_a_cycle(tmp_path: Path) -> None:
    tree = tmp_path / "services"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "v1"))
    planted = tree / "vien" / "runtime" / "planted.py"
    planted.write_text("from vien_router.logic import Router\n", encoding="utf-8")
    (tree / "vien_search" / "planted.py").write_text("import vien_ingest.processor\n", encoding="utf-8")
    assert layer_violations(tree) == ["foundation vien.runtime.planted imports vien_router.logic",
                                      "foundation vien.runtime.planted imports vien_router.logic.Router",
                                      "service vien_search.planted imports vien_ingest.processor"]
    (tree / "vien" / "text" / "cycle_a.py").write_text("from vien.text import cycle_b\n", encoding="utf-8")
    (tree / "vien" / "text" / "cycle_b.py").write_text("import vien.text.cycle_a\n", encoding="utf-8")
    assert ["vien.text.cycle_a", "vien.text.cycle_b", "vien.text.cycle_a"] in import_cycles(tree)
