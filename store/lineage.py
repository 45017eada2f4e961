"""Where a run came from: base model, data, parent runs, and what it produced."""

from __future__ import annotations

from typing import Any

from store.errors import NotFound


class LineageMixin:
    """Mixed into Store; uses its get_* / list_* accessors."""

    def lineage(self, run_id: int) -> dict[str, Any]:
        """A JSON-able nested dict::

            {"run": {...}, "base_model": {...} | None, "adapter_model": {...} | None,
             "dataset_version": {..., "lineage": {...}} | None,
             "exports": [{...}, ...],            # newest first
             "resumed_from": <same shape> | None,
             "parent": <same shape> | None,      # recursively, up to the first run
             "ancestors": [parent_id, grandparent_id, ...]}   # top level only

        Raises NotFound for an unknown run.
        """
        seen: set[int] = set()
        tree = self._lineage_node(run_id, seen)
        ancestors = []
        node = tree["parent"]
        while node is not None:
            ancestors.append(node["run"]["id"])
            node = node["parent"]
        tree["ancestors"] = ancestors
        return tree

    def _lineage_node(self, run_id: int, seen: set[int]) -> dict[str, Any]:
        seen.add(run_id)
        run = self.get_run(run_id)

        def model(model_id: int | None) -> dict[str, Any] | None:
            if model_id is None:
                return None
            try:
                return self.get_model(model_id).to_dict()
            except NotFound:
                return None

        def linked_run(other: int | None) -> dict[str, Any] | None:
            # `seen` stops a cycle (possible only via update_run) from recursing forever.
            if other is None or other in seen:
                return None
            return self._lineage_node(other, seen)

        dataset = None
        if run.dataset_version_id is not None:
            dataset = self.get_dataset_version(run.dataset_version_id).to_dict()
        return {
            "run": run.to_dict(),
            "base_model": model(run.base_model_id),
            "adapter_model": model(run.adapter_model_id),
            "dataset_version": dataset,
            "exports": [e.to_dict() for e in self.list_exports(run_id=run_id)],
            "resumed_from": linked_run(run.resumed_from),
            "parent": linked_run(run.parent_run_id),
        }
