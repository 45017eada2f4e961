"""Runs and their metrics: the part of the Store the job runner writes to most."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from store import db as dbmod
from store.db import dump_json, finite_or_none, to_time
from store.errors import NotFound
from store.models import FINISHED_STATUSES, RUN_STATUSES, Metric, Run
from store.rows import row_to

# update_run may change these; id, kind and created_at are fixed at creation.
RUN_UPDATABLE = (
    "status",
    "name",
    "config",
    "environment",
    "seed",
    "base_model_id",
    "dataset_version_id",
    "parent_run_id",
    "resumed_from",
    "output_dir",
    "adapter_model_id",
    "pid",
    "error",
    "notes",
    "started_at",
    "finished_at",
)


def check_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise ValueError(
            f"Unknown run status {status!r}; expected one of: {', '.join(RUN_STATUSES)}."
        )
    return status


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


class RunsMixin:
    """Mixed into Store; relies on its _conns/_one/_all/_insert/_require/_get helpers."""

    # ---- runs -----------------------------------------------------------------------------

    def create_run(
        self,
        kind: str,
        config: dict[str, Any],
        *,
        base_model_id: int | None = None,
        dataset_version_id: int | None = None,
        parent_run_id: int | None = None,
        seed: int | None = None,
        environment: dict[str, Any] | None = None,
        output_dir: str | Path | None = None,
        name: str | None = None,
        resumed_from: int | None = None,
        status: str = "queued",
    ) -> Run:
        check_status(status)
        if not kind:
            raise ValueError("A run needs a kind (sft, dpo, ppo, ...).")
        stamp = dbmod.now()
        with self._conns.write() as db:
            self._require(db, "models", base_model_id, "base model")
            self._require(db, "dataset_versions", dataset_version_id, "dataset version")
            self._require(db, "runs", parent_run_id, "parent run")
            self._require(db, "runs", resumed_from, "run to resume from")
            new_id = self._insert(
                db,
                "runs",
                {
                    "kind": kind,
                    "status": status,
                    "name": name,
                    "config": dump_json(config, empty={}),
                    "environment": dump_json(environment, empty={}),
                    "seed": seed,
                    "base_model_id": base_model_id,
                    "dataset_version_id": dataset_version_id,
                    "parent_run_id": parent_run_id,
                    "resumed_from": resumed_from,
                    "output_dir": None if output_dir is None else str(output_dir),
                    "created_at": stamp,
                    "started_at": stamp if status == "running" else None,
                    "finished_at": stamp if status in FINISHED_STATUSES else None,
                },
            )
        return self.get_run(new_id)

    def update_run(self, id: int, **fields: Any) -> Run:
        """Change a run. Moving to ``running`` stamps started_at (if unset); moving to a finished
        status (completed/failed/cancelled/interrupted) stamps finished_at — unless given."""
        unknown = set(fields) - set(RUN_UPDATABLE)
        if unknown:
            raise ValueError(
                f"update_run cannot set {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(RUN_UPDATABLE)}."
            )
        if not fields:
            return self.get_run(id)
        values = dict(fields)
        with self._conns.write() as db:
            current = db.execute("SELECT started_at FROM runs WHERE id = ?", [id]).fetchone()
            if current is None:
                raise NotFound("run", id)
            if "status" in values:
                check_status(values["status"])
                if (
                    values["status"] == "running"
                    and "started_at" not in values
                    and current[0] is None
                ):
                    values["started_at"] = dbmod.now()
                if values["status"] in FINISHED_STATUSES and "finished_at" not in values:
                    values["finished_at"] = dbmod.now()
            for ref, table, what in (
                ("base_model_id", "models", "base model"),
                ("adapter_model_id", "models", "adapter model"),
                ("dataset_version_id", "dataset_versions", "dataset version"),
                ("parent_run_id", "runs", "parent run"),
                ("resumed_from", "runs", "run to resume from"),
            ):
                if ref in values:
                    self._require(db, table, values[ref], what)
            for col in ("config", "environment"):
                if col in values:
                    values[col] = dump_json(values[col], empty={})
            for col in ("started_at", "finished_at"):
                if values.get(col) is not None:
                    values[col] = to_time(values[col])
            if values.get("output_dir") is not None:
                values["output_dir"] = str(values["output_dir"])
            sets = ", ".join(f"[{c}] = ?" for c in values)
            db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*values.values(), id])
        return self.get_run(id)

    def get_run(self, id: int) -> Run:
        return self._get(Run, "runs", id, "run")

    def list_runs(
        self,
        status: str | Iterable[str] | None = None,
        kind: str | Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Newest first; ``status`` / ``kind`` may be one value or several."""
        where, params = [], []
        for col, wanted in (("status", _as_tuple(status)), ("kind", _as_tuple(kind))):
            if wanted is not None:
                if col == "status":
                    for s in wanted:
                        check_status(s)
                where.append(f"{col} IN ({', '.join('?' for _ in wanted)})")
                params.extend(wanted)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [row_to(Run, r) for r in self._all(sql, params)]

    # ---- metrics --------------------------------------------------------------------------

    def log_metrics(self, run_id: int, step: int, values: Mapping[str, Any], t: Any = None) -> None:
        """One row per name, all in one transaction. NaN is kept as a row with value None."""
        stamp = to_time(t)
        rows = [(run_id, int(step), str(k), finite_or_none(v, k), stamp) for k, v in values.items()]
        with self._conns.write() as db:
            self._require(db, "runs", run_id, "run")
            db.conn.executemany(
                "INSERT INTO metrics (run_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)", rows
            )

    def metrics(self, run_id: int, name: str | None = None) -> list[Metric]:
        if name is None:
            rows = self._all(
                "SELECT * FROM metrics WHERE run_id = ? ORDER BY step, name, id", [run_id]
            )
        else:
            rows = self._all(
                "SELECT * FROM metrics WHERE run_id = ? AND name = ? ORDER BY step, id",
                [run_id, name],
            )
        return [row_to(Metric, r) for r in rows]

    def metric_summary(self, run_id: int) -> dict[str, dict[str, Any]]:
        """{name: {"last", "min", "max", "count", "last_step"}}; "last" is the value at the highest
        step (latest logged wins a tie)."""
        rows = self._all(
            """
            SELECT name, MIN(value) AS min, MAX(value) AS max, COUNT(*) AS count,
                   MAX(step) AS last_step,
                   (SELECT m2.value FROM metrics m2 WHERE m2.run_id = m.run_id AND m2.name = m.name
                     ORDER BY m2.step DESC, m2.id DESC LIMIT 1) AS last
            FROM metrics m WHERE run_id = ? GROUP BY name ORDER BY name
            """,
            [run_id],
        )
        return {
            r["name"]: {k: r[k] for k in ("last", "min", "max", "count", "last_step")} for r in rows
        }
