"""A run's lineage (store.lineage) as a Tree: what it was made from and what was made from it.

The lineage dict nests store rows (frozen dataclasses) and plain dicts; rows get a one-line
label a person recognises ("dataset version #3 demo/sft"), everything else is shown by key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def describe(obj: Any) -> str | None:
    """A one-line label for a store row, or None if `obj` is not one we recognise."""
    ident = _get(obj, "id")
    if ident is None:
        return None
    if _get(obj, "content_hash") is not None:
        return f"dataset version #{ident} {_get(obj, 'name', '')} ({_get(obj, 'rows', '?')} rows)"
    if _get(obj, "config") is not None and _get(obj, "status") is not None:
        name = _get(obj, "name") or ""
        return f"run #{ident} {_get(obj, 'kind', '')} {name} [{_get(obj, 'status')}]".replace(
            "  ", " "
        )
    if _get(obj, "format") is not None and _get(obj, "sha256", False) is not False:
        quant = _get(obj, "quant") or ""
        return f"export #{ident} {_get(obj, 'format')} {quant} {_get(obj, 'path', '')}".replace(
            "  ", " "
        )
    if _get(obj, "path") is not None and _get(obj, "kind") is not None:
        return f"model #{ident} {_get(obj, 'name', '')} ({_get(obj, 'kind')}) {_get(obj, 'path')}"
    return None


def _as_mapping(obj: Any) -> dict | None:
    if isinstance(obj, dict):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return None


class LineageTree(Tree):
    DEFAULT_CSS = """
    LineageTree { height: auto; max-height: 20; background: $surface; }
    """

    # Labels are rich Text, never markup: store values like "[failed]" must show as typed.
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("lineage", id=id)
        self.show_root = True
        self.guide_depth = 3

    def show(self, lineage: dict | None, title: str = "lineage") -> None:
        self.clear()
        self.root.set_label(title)
        if not lineage:
            self.root.add_leaf("nothing recorded")
        else:
            self._add(self.root, lineage, depth=0)
        self.root.expand_all()

    def _add(self, node: TreeNode, value: Any, depth: int) -> None:
        mapping = _as_mapping(value)
        if mapping is not None:
            for key, child in mapping.items():
                if child is None or child == [] or child == {}:
                    continue
                label = describe(child)
                if label is not None:
                    branch = node.add(Text(f"{key}: {label}"))
                    # a row's own fields are in the detail pane; only follow nested lineage
                    nested = _get(child, "lineage")
                    if nested:
                        self._add(branch, nested, depth + 1)
                    else:
                        branch.allow_expand = False
                elif isinstance(child, list | tuple) and all(
                    isinstance(x, int | float | str) for x in child
                ):
                    node.add_leaf(Text(f"{key}: {', '.join(map(str, child))}"))
                elif isinstance(child, dict | list | tuple) and depth < 6:
                    self._add(node.add(Text(str(key))), child, depth + 1)
                else:
                    node.add_leaf(Text(f"{key}: {child}"))
        elif isinstance(value, list | tuple):
            for item in value:
                label = describe(item)
                if label is not None:
                    node.add_leaf(Text(label))
                elif depth < 6 and (_as_mapping(item) is not None or isinstance(item, list)):
                    self._add(node.add("·"), item, depth + 1)
                else:
                    node.add_leaf(Text(str(item)))
        else:
            node.add_leaf(Text(str(value)))
