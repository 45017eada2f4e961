"""The engine's layout: rooms named for the loop, imports that run one way, modules that fit on
a screen. Read from the source with `ast` (every import, function-level ones included), so a
lazy import inside a function cannot hide a circle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "tuiapp" / "engine"
DEMO = REPO / "tuiapp" / "demo"
ROOMS = ("data", "train", "jobs", "infer", "label", "export")
MAX_LINES = 500


def imported_modules(path: Path) -> set[str]:
    """Every absolute `tuiapp...` module a file imports, `from a import b` counted as a.b too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import (the project imports absolutely)"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tuiapp.")}


def node_of(module: str) -> str | None:
    """The graph node a module belongs to: an engine room or top-level engine module, or one demo
    module (the demo is a set of small modules, not a room with one face)."""
    parts = module.split(".")
    if parts[:2] == ["tuiapp", "engine"] and len(parts) > 2:
        return parts[2]
    if parts[:2] == ["tuiapp", "demo"] and len(parts) > 2:
        return f"demo.{parts[2]}"
    return None


def file_module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in [*ENGINE.rglob("*.py"), *DEMO.rglob("*.py")]:
        source = node_of(file_module(path))
        if source is None:
            continue
        for module in imported_modules(path):
            target = node_of(module)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_circle_and_a_clean_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_between_engine_rooms_or_demo_modules():
    graph = room_graph()
    assert set(ROOMS) - {"data"} <= set(graph), "each later room imports; the graph was misread"
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_imports_point_down_the_loop():
    graph = room_graph()
    for low in ("train", "infer", "data"):
        assert "jobs" not in graph[low], f"{low}/ imports jobs/ (the runner sits above it)"
    assert "facade" not in set().union(*graph.values()), "only the UI holds the facade"
    assert graph["events"] == set(), "events.py is the floor: it imports no room"
    assert graph["context"] <= {"events"}, "the job context sits below train/ and jobs/"
    assert graph.get("data", set()) <= {"events", "context"}, "data/ reads files; it imports no later stage"


def test_engine_folder_is_rooms_and_at_most_six_modules():
    modules = sorted(p.name for p in ENGINE.glob("*.py"))
    rooms = sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists())
    assert rooms == sorted(ROOMS)
    assert len(modules) <= 6, modules


def test_every_subpackage_opens_with_its_docstring():
    for init in [*ENGINE.glob("*/__init__.py"), DEMO / "__init__.py", ENGINE / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 12, f"{init.relative_to(REPO)} needs a docstring"


def test_no_module_over_500_lines():
    long = {
        str(path.relative_to(REPO)): n
        for folder in ("tuiapp", "store")
        for path in (REPO / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, long
