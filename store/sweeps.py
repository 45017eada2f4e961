"""Sweeps: a grid of normal runs started together, and the runs that belong to each.

A sweep row keeps what is needed to read its runs side by side later: the preset and resolved
config it started from, the grid (keys and values, in the order given), the prompt set that
scores the runs, and a JSON ``details`` bag (pre-flight estimates per run, the evaluation that
scored them). The runs themselves are ordinary rows with ``sweep_id`` set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store import db as dbmod
from store.db import dump_json, load_json
from store.errors import NotFound
from store.models import Run, Sweep
from store.rows import row_to


class SweepsMixin:
    """Mixed into Store; relies on its _conns/_one/_all/_insert/_require helpers."""

    def create_sweep(
        self,
        name: str,
        kind: str,
        grid: list[tuple[str, list[Any]]] | list[list[Any]],
        *,
        config: dict[str, Any] | None = None,
        config_path: str | Path | None = None,
        prompts: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Sweep:
        if not kind:
            raise ValueError("A sweep needs the job kind its runs have (sft, dpo, ...).")
        cells = [[str(key), list(values)] for key, values in grid]
        if not cells:
            raise ValueError("A sweep needs at least one grid key with values.")
        with self._conns.write() as db:
            new_id = self._insert(
                db,
                "sweeps",
                {
                    "name": name,
                    "kind": kind,
                    "config_path": None if config_path is None else str(config_path),
                    "config": dump_json(config, empty={}),
                    "grid": dump_json(cells, empty=[]),
                    "prompts": prompts,
                    "details": dump_json(details, empty={}),
                    "created_at": dbmod.now(),
                },
            )
        return self.get_sweep(new_id)

    def _sweep(self, row: dict[str, Any]) -> Sweep:
        runs = self._all("SELECT id FROM runs WHERE sweep_id = ? ORDER BY id", [row["id"]])
        return row_to(Sweep, row, run_ids=tuple(r["id"] for r in runs))

    def get_sweep(self, id: int) -> Sweep:
        row = self._one("SELECT * FROM sweeps WHERE id = ?", [id])
        if row is None:
            raise NotFound("sweep", id)
        return self._sweep(row)

    def list_sweeps(self) -> list[Sweep]:
        """Newest first."""
        return [self._sweep(r) for r in self._all("SELECT * FROM sweeps ORDER BY id DESC")]

    def add_run_to_sweep(self, sweep_id: int, run_id: int) -> Run:
        with self._conns.write() as db:
            self._require(db, "sweeps", sweep_id, "sweep")
            self._require(db, "runs", run_id, "run")
            db.execute("UPDATE runs SET sweep_id = ? WHERE id = ?", [sweep_id, run_id])
        return self.get_run(run_id)

    def sweep_runs(self, sweep_id: int) -> list[Run]:
        """The sweep's runs in the order they were queued (grid order)."""
        self.get_sweep(sweep_id)
        rows = self._all("SELECT * FROM runs WHERE sweep_id = ? ORDER BY id", [sweep_id])
        return [row_to(Run, r) for r in rows]

    def update_sweep_details(self, sweep_id: int, **values: Any) -> Sweep:
        """Merge ``values`` into the sweep's details (read-modify-write under the write lock, so
        two processes adding different keys both keep theirs)."""
        with self._conns.write() as db:
            row = db.execute("SELECT details FROM sweeps WHERE id = ?", [sweep_id]).fetchone()
            if row is None:
                raise NotFound("sweep", sweep_id)
            details = load_json(row[0], empty={})
            details.update(values)
            db.execute("UPDATE sweeps SET details = ? WHERE id = ?",
                       [dump_json(details, empty={}), sweep_id])
        return self.get_sweep(sweep_id)
