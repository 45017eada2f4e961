"""Store(db): everything tuneloop remembers, in one SQLite file.

Screens and the engine never write SQL; every question they ask is a method here returning the
frozen dataclasses of ``store.models``. Runs/metrics, labelling and lineage live in
``store.runs``, ``store.labels`` and ``store.lineage`` (mixed in below) to keep files readable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from store import db as dbmod
from store.db import Connections, dump_json, load_json
from store.errors import NotFound, StoreError
from store.labels import LabelsMixin
from store.lineage import LineageMixin
from store.migrations import MIGRATION_NAMES, MIGRATION_SET, migrate, migrations
from store.models import MODEL_KINDS, DatasetVersion, Evaluation, ExportRow, Generation, ModelRow
from store.rows import row_to
from store.runs import RunsMixin
from store.sweeps import SweepsMixin


class Store(RunsMixin, LabelsMixin, LineageMixin, SweepsMixin):
    """The tuneloop database. ``Store(path)`` opens (creating if needed) and migrates it.

    ``path`` is a file path or ``":memory:"`` (tests; one shared connection, this process only).
    Safe to use from several threads: each thread gets its own connection (see ``store.db``).
    """

    def __init__(self, path: str | Path = dbmod.MEMORY):
        self.path = str(path)
        self._conns = Connections(self.path)
        with self._conns.read() as db:
            self._check_not_newer(db)
            migrate(db)

    # ---- plumbing -------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's sqlite_utils Database (for tests and diagnostics, not for screens)."""
        return self._conns.get()

    def close(self) -> None:
        self._conns.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @staticmethod
    def _check_not_newer(db: Database) -> None:
        table = migrations.migrations_table
        if table not in db.table_names():
            return
        applied = {
            r["name"]
            for r in db.query(
                f"SELECT name FROM [{table}] WHERE migration_set = ?", [MIGRATION_SET]
            )
        }
        unknown = applied - set(MIGRATION_NAMES)
        if unknown:
            raise StoreError(
                "This database was written by a newer tuneloop (schema steps "
                f"{', '.join(sorted(unknown))}); upgrade tuneloop to open it."
            )

    def applied_migrations(self) -> list[str]:
        with self._conns.read() as db:
            return [m.name for m in migrations.applied(db)]

    def _one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        with self._conns.read() as db:
            return next(iter(db.query(sql, list(params))), None)

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._conns.read() as db:
            return list(db.query(sql, list(params)))

    @staticmethod
    def _insert(db: Database, table: str, row: Mapping[str, Any]) -> int:
        cols = ", ".join(f"[{c}]" for c in row)
        marks = ", ".join("?" for _ in row)
        cur = db.execute(f"INSERT INTO [{table}] ({cols}) VALUES ({marks})", list(row.values()))
        return int(cur.lastrowid)

    @staticmethod
    def _require(db: Database, table: str, id: int | None, what: str) -> None:
        """Refuse a dangling reference with a message naming it (not 'FOREIGN KEY failed')."""
        if id is None:
            return
        if db.execute(f"SELECT 1 FROM [{table}] WHERE id = ?", [id]).fetchone() is None:
            raise ValueError(f"There is no {what} with id {id}.")

    def _get(self, cls: type, table: str, id: int, what: str) -> Any:
        row = self._one(f"SELECT * FROM [{table}] WHERE id = ?", [id])
        if row is None:
            raise NotFound(what, id)
        return row_to(cls, row)

    # ---- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._one("SELECT value FROM meta WHERE key = ?", [key])
        return default if row is None else load_json(row["value"], empty={})

    def set_meta(self, key: str, value: Any) -> None:
        with self._conns.write() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, dump_json(value, empty=None)],
            )

    # ---- models ---------------------------------------------------------------------------

    def add_model(
        self,
        name: str,
        kind: str,
        path: str | Path,
        base_model_id: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ModelRow:
        if kind not in MODEL_KINDS:
            raise ValueError(
                f"Unknown model kind {kind!r}; expected one of: {', '.join(MODEL_KINDS)}."
            )
        with self._conns.write() as db:
            self._require(db, "models", base_model_id, "base model")
            new_id = self._insert(
                db,
                "models",
                {
                    "name": name,
                    "kind": kind,
                    "path": str(path),
                    "base_model_id": base_model_id,
                    "meta": dump_json(meta, empty={}),
                    "created_at": dbmod.now(),
                },
            )
        return self.get_model(new_id)

    def get_model(self, id: int) -> ModelRow:
        return self._get(ModelRow, "models", id, "model")

    def list_models(self, kind: str | None = None) -> list[ModelRow]:
        if kind is None:
            rows = self._all("SELECT * FROM models ORDER BY id")
        else:
            rows = self._all("SELECT * FROM models WHERE kind = ? ORDER BY id", [kind])
        return [row_to(ModelRow, r) for r in rows]

    def find_model(self, path: str | Path) -> ModelRow | None:
        """The newest model registered at exactly this path, or None."""
        row = self._one("SELECT * FROM models WHERE path = ? ORDER BY id DESC LIMIT 1", [str(path)])
        return None if row is None else row_to(ModelRow, row)

    # ---- dataset versions -----------------------------------------------------------------

    def add_dataset_version(
        self,
        name: str,
        path: str | Path,
        content_hash: str,
        format: str,
        kind: str,
        rows: int,
        stats: dict[str, Any] | None = None,
        source: str | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Register an immutable dataset version. Idempotent on (name, content_hash): the same
        bytes imported again under the same name return the first row unchanged."""
        if not content_hash:
            raise ValueError("content_hash is required (engine.data.content_hash(path)).")
        with self._conns.write() as db:
            existing = db.execute(
                "SELECT id FROM dataset_versions WHERE name = ? AND content_hash = ?",
                [name, content_hash],
            ).fetchone()
            if existing:
                new_id = existing[0]
            else:
                new_id = self._insert(
                    db,
                    "dataset_versions",
                    {
                        "name": name,
                        "path": str(path),
                        "content_hash": content_hash,
                        "format": format,
                        "kind": kind,
                        "rows": int(rows),
                        "stats": dump_json(stats, empty={}),
                        "source": source,
                        "lineage": dump_json(lineage, empty={}),
                        "created_at": dbmod.now(),
                    },
                )
        return self.get_dataset_version(new_id)

    def get_dataset_version(self, id: int) -> DatasetVersion:
        return self._get(DatasetVersion, "dataset_versions", id, "dataset version")

    def list_dataset_versions(
        self, name: str | None = None, kind: str | None = None
    ) -> list[DatasetVersion]:
        """Oldest first, so the last of a name is its newest version."""
        where, params = [], []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = "SELECT * FROM dataset_versions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [row_to(DatasetVersion, r) for r in self._all(sql + " ORDER BY id", params)]

    def update_dataset_stats(self, id: int, stats: dict[str, Any]) -> DatasetVersion:
        with self._conns.write() as db:
            self._require(db, "dataset_versions", id, "dataset version")
            db.execute(
                "UPDATE dataset_versions SET stats = ? WHERE id = ?",
                [dump_json(stats, empty={}), id],
            )
        return self.get_dataset_version(id)

    # ---- generations ----------------------------------------------------------------------

    def add_generation(
        self,
        model_ref: str,
        prompt: str,
        output: str,
        *,
        params: dict[str, Any] | None = None,
        latency_s: float | None = None,
        tokens: int | None = None,
        system: str | None = None,
        run_id: int | None = None,
        step: int | None = None,
    ) -> Generation:
        with self._conns.write() as db:
            self._require(db, "runs", run_id, "run")
            new_id = self._insert(
                db,
                "generations",
                {
                    "model_ref": model_ref,
                    "prompt": prompt,
                    "system": system,
                    "output": output,
                    "params": dump_json(params, empty={}),
                    "latency_s": latency_s,
                    "tokens": tokens,
                    "run_id": run_id,
                    "step": step,
                    "created_at": dbmod.now(),
                },
            )
        return self.get_generation(new_id)

    def get_generation(self, id: int) -> Generation:
        return self._get(Generation, "generations", id, "generation")

    def list_generations(
        self, model_ref: str | None = None, run_id: int | None = None, limit: int = 100
    ) -> list[Generation]:
        """Newest first."""
        where, params = [], []
        if model_ref is not None:
            where.append("model_ref = ?")
            params.append(model_ref)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        sql = "SELECT * FROM generations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._all(sql + " ORDER BY id DESC LIMIT ?", [*params, int(limit)])
        return [row_to(Generation, r) for r in rows]

    # ---- evaluations ----------------------------------------------------------------------

    def add_evaluation(
        self,
        name: str,
        model_refs: list[str],
        metrics: dict[str, Any],
        *,
        dataset_version_id: int | None = None,
        run_ids: Iterable[int] = (),
        details: dict[str, Any] | None = None,
    ) -> Evaluation:
        run_ids = tuple(dict.fromkeys(int(r) for r in run_ids))
        with self._conns.write() as db:
            self._require(db, "dataset_versions", dataset_version_id, "dataset version")
            for run_id in run_ids:
                self._require(db, "runs", run_id, "run")
            new_id = self._insert(
                db,
                "evaluations",
                {
                    "name": name,
                    "model_refs": dump_json(list(model_refs), empty=[]),
                    "metrics": dump_json(metrics, empty={}),
                    "dataset_version_id": dataset_version_id,
                    "details": dump_json(details, empty={}),
                    "created_at": dbmod.now(),
                },
            )
            for run_id in run_ids:
                db.execute(
                    "INSERT INTO evaluation_runs (evaluation_id, run_id) VALUES (?, ?)",
                    [new_id, run_id],
                )
        return self.get_evaluation(new_id)

    def _evaluation(self, row: dict[str, Any]) -> Evaluation:
        links = self._all(
            "SELECT run_id FROM evaluation_runs WHERE evaluation_id = ? ORDER BY rowid", [row["id"]]
        )
        return row_to(Evaluation, row, run_ids=tuple(r["run_id"] for r in links))

    def get_evaluation(self, id: int) -> Evaluation:
        row = self._one("SELECT * FROM evaluations WHERE id = ?", [id])
        if row is None:
            raise NotFound("evaluation", id)
        return self._evaluation(row)

    def list_evaluations(self, run_id: int | None = None) -> list[Evaluation]:
        """Newest first; with ``run_id``, only evaluations linked to that run."""
        if run_id is None:
            rows = self._all("SELECT * FROM evaluations ORDER BY id DESC")
        else:
            rows = self._all(
                "SELECT e.* FROM evaluations e JOIN evaluation_runs l ON l.evaluation_id = e.id"
                " WHERE l.run_id = ? ORDER BY e.id DESC",
                [run_id],
            )
        return [self._evaluation(r) for r in rows]

    # ---- exports --------------------------------------------------------------------------

    def add_export(
        self,
        path: str | Path,
        format: str,
        *,
        quant: str | None = None,
        size_bytes: int | None = None,
        sha256: str | None = None,
        parity: dict[str, Any] | None = None,
        run_id: int | None = None,
        model_id: int | None = None,
        status: str = "ok",
    ) -> ExportRow:
        with self._conns.write() as db:
            self._require(db, "runs", run_id, "run")
            self._require(db, "models", model_id, "model")
            new_id = self._insert(
                db,
                "exports",
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "path": str(path),
                    "format": format,
                    "quant": quant,
                    "size_bytes": size_bytes,
                    "sha256": sha256,
                    "parity": dump_json(parity, empty={}),
                    "status": status,
                    "created_at": dbmod.now(),
                },
            )
        return self.get_export(new_id)

    def get_export(self, id: int) -> ExportRow:
        return self._get(ExportRow, "exports", id, "export")

    def list_exports(self, run_id: int | None = None) -> list[ExportRow]:
        """Newest first."""
        if run_id is None:
            rows = self._all("SELECT * FROM exports ORDER BY id DESC")
        else:
            rows = self._all("SELECT * FROM exports WHERE run_id = ? ORDER BY id DESC", [run_id])
        return [row_to(ExportRow, r) for r in rows]

    # ---- overview -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Sizes for the UI header: runs, dataset versions, models, a person's live labels (the
        judge's are counted by `labels stats`), exports."""
        row = self._one(
            f"""SELECT (SELECT COUNT(*) FROM runs) AS runs,
                       (SELECT COUNT(*) FROM dataset_versions) AS dataset_versions,
                       (SELECT COUNT(*) FROM models) AS models,
                       (SELECT COUNT(*) FROM ({self._LIVE_SQL} AND e.source = 'human')) AS labels,
                       (SELECT COUNT(*) FROM exports) AS exports"""
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}


__all__ = ["Store"]
