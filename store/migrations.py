"""Schema migrations — append-only.

Never edit a migration that has shipped: a user's database already ran it. To change the schema,
append a new ``@_migration`` function named ``mNNN_what_it_does`` at the bottom. Each one gets a
``sqlite_utils.Database`` and runs inside one write transaction opened by ``migrate``:
``db.execute`` and sqlite-utils table methods are fine (they nest as savepoints), but never
``executescript`` — it commits half-way.

JSON columns are TEXT holding JSON; the Store decodes them.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator

from sqlite_migrate import Migrations
from sqlite_utils import Database

MIGRATION_SET = "tuneloop"
migrations = Migrations(MIGRATION_SET)
MIGRATION_NAMES: list[str] = []  # in order of application


def _migration(fn):
    """Register ``fn`` as the next migration (name = function name)."""
    migrations(name=fn.__name__)(fn)
    MIGRATION_NAMES.append(fn.__name__)
    return fn


def _run_ddl(db: Database, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@_migration
def m001_initial(db: Database) -> None:
    """The complete first schema: models, datasets, runs, metrics, generations, evaluations,
    labelling and exports."""
    _run_ddl(
        db,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            base_model_id INTEGER REFERENCES models(id),
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_models_path ON models(path);
        CREATE TABLE dataset_versions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            format TEXT NOT NULL,
            kind TEXT NOT NULL,
            rows INTEGER NOT NULL,
            stats TEXT NOT NULL DEFAULT '{}',
            source TEXT,
            lineage TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE UNIQUE INDEX idx_dataset_versions_name_hash
            ON dataset_versions(name, content_hash);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            name TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            environment TEXT NOT NULL DEFAULT '{}',
            seed INTEGER,
            base_model_id INTEGER REFERENCES models(id),
            dataset_version_id INTEGER REFERENCES dataset_versions(id),
            parent_run_id INTEGER REFERENCES runs(id),
            resumed_from INTEGER REFERENCES runs(id),
            output_dir TEXT,
            adapter_model_id INTEGER REFERENCES models(id),
            pid INTEGER,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX idx_runs_status ON runs(status);
        CREATE INDEX idx_runs_parent ON runs(parent_run_id);
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL,
            t TEXT NOT NULL
        );
        CREATE INDEX idx_metrics_run_name_step ON metrics(run_id, name, step);
        CREATE TABLE generations (
            id INTEGER PRIMARY KEY,
            model_ref TEXT NOT NULL,
            prompt TEXT NOT NULL,
            system TEXT,
            output TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            latency_s REAL,
            tokens INTEGER,
            run_id INTEGER REFERENCES runs(id),
            step INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_generations_model_ref ON generations(model_ref);
        CREATE INDEX idx_generations_run ON generations(run_id, step);
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            model_refs TEXT NOT NULL DEFAULT '[]',
            metrics TEXT NOT NULL DEFAULT '{}',
            dataset_version_id INTEGER REFERENCES dataset_versions(id),
            details TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE evaluation_runs (
            evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
            run_id INTEGER NOT NULL REFERENCES runs(id),
            PRIMARY KEY (evaluation_id, run_id)
        );
        CREATE INDEX idx_evaluation_runs_run ON evaluation_runs(run_id);
        CREATE TABLE label_tasks (
            id INTEGER PRIMARY KEY,
            task_set TEXT,
            prompt TEXT NOT NULL,
            system TEXT,
            candidates TEXT NOT NULL DEFAULT '[]',
            source TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_label_tasks_set ON label_tasks(task_set);
        CREATE TABLE label_events (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES label_tasks(id),
            kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')),
            choice TEXT,
            swapped INTEGER NOT NULL DEFAULT 0,
            edited TEXT,
            elapsed_ms INTEGER,
            undoes_event_id INTEGER REFERENCES label_events(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_label_events_task ON label_events(task_id);
        CREATE INDEX idx_label_events_undoes ON label_events(undoes_event_id);
        CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id),
            model_id INTEGER REFERENCES models(id),
            path TEXT NOT NULL,
            format TEXT NOT NULL,
            quant TEXT,
            size_bytes INTEGER,
            sha256 TEXT,
            parity TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_exports_run ON exports(run_id)
        """,
    )


@_migration
def m002_run_notes_task_meta(db: Database) -> None:
    """Free-text notes on runs (edited on the Runs screen) and a JSON meta bag on label tasks
    (where a task came from: prompt ids, generation settings)."""
    db.table("runs").add_column("notes", str, not_null_default="")
    db.table("label_tasks").add_column("meta", str, not_null_default="{}")


@_migration
def m003_canonical_label_refs(db: Database) -> None:
    """One REF per model in label tasks (``1`` and ``run:1`` were two models in win-rates): each
    candidate's model_ref, and the meta "pair" a task was made for, through canonical_ref."""
    import json

    from store.refs import canonical_ref

    rows = db.execute("SELECT id, candidates, meta FROM label_tasks").fetchall()
    for task_id, candidates_text, meta_text in rows:
        candidates = json.loads(candidates_text or "[]")
        meta = json.loads(meta_text or "{}")
        changed = False
        for cand in candidates:
            if isinstance(cand, dict) and isinstance(cand.get("model_ref"), str):
                new = canonical_ref(cand["model_ref"])
                changed |= new != cand["model_ref"]
                cand["model_ref"] = new
        if isinstance(meta, dict) and isinstance(meta.get("pair"), list):
            pair = [canonical_ref(r) if isinstance(r, str) else r for r in meta["pair"]]
            changed |= pair != meta["pair"]
            meta["pair"] = pair
        if changed:
            db.execute("UPDATE label_tasks SET candidates = ?, meta = ? WHERE id = ?",
                       [json.dumps(candidates, ensure_ascii=False),
                        json.dumps(meta, ensure_ascii=False), task_id])


@_migration
def m004_label_sources(db: Database) -> None:
    """Labels from an AI judge beside a person's: who labelled (``source``, 'human' for every
    older row), the principle the judge cited, its one-line rationale, and ``detail`` (JSON: the
    verdict in each order it was shown, how it was read). A task may then hold one live label
    per source. Columns another branch already added are left as they are."""
    events = db.table("label_events")
    have = set(events.columns_dict)
    if "source" not in have:
        events.add_column("source", str, not_null_default="human")
    for name in ("principle", "rationale"):
        if name not in have:
            events.add_column(name, str)
    if "detail" not in have:
        events.add_column("detail", str, not_null_default="{}")
    db.execute("CREATE INDEX IF NOT EXISTS idx_label_events_task_source"
               " ON label_events(task_id, source)")


@_migration
def m005_sweeps(db: Database) -> None:
    """Sweeps: one row per ``tuneloop sweep`` (the preset it started from, the grid, the prompt
    set that scores it) and ``runs.sweep_id`` naming the sweep a run is a grid point of. Named
    m005 so it cannot clash with another branch's m004; order is the order in this file."""
    _run_ddl(
        db,
        """
        CREATE TABLE sweeps (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            config_path TEXT,
            config TEXT NOT NULL DEFAULT '{}',
            grid TEXT NOT NULL DEFAULT '[]',
            prompts TEXT,
            details TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id);
        CREATE INDEX idx_runs_sweep ON runs(sweep_id)
        """,
    )


# ---- append new migrations above this line ----


def migrate(db: Database, *, stop_before: str | None = None) -> list[str]:
    """Apply pending migrations; return the names applied.

    Like ``Migrations.apply`` but each step takes the write lock first (``BEGIN IMMEDIATE``) and
    re-checks under it whether it is still pending: the TUI and a job's child process may open a
    fresh database at the same moment, and the loser must wait, not fail with "table exists".
    Expects a connection in autocommit mode (isolation_level=None), as ``store.db`` opens them.
    """
    applied: list[str] = []
    for migration in migrations.pending(db):
        if migration.name == stop_before:
            break
        with _immediate(db):
            migrations.ensure_migrations_table(db)
            if migration.name in {m.name for m in migrations.applied(db)}:
                continue  # another connection got there first
            migration.fn(db)
            db.table(migrations.migrations_table).insert(
                {
                    "migration_set": MIGRATION_SET,
                    "name": migration.name,
                    "applied_at": datetime.datetime.now(datetime.UTC).isoformat(),
                }
            )
            applied.append(migration.name)
    return applied


@contextlib.contextmanager
def _immediate(db: Database) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()  # no-op if the error already ended the transaction
        raise
    db.execute("COMMIT")
