"""Label tasks and the append-only label log.

A label is never updated or deleted: pressing a key appends a ``label`` event, undo appends an
``undo`` event pointing at the label it cancels. A label is *live* while no undo points at it.
Each write is its own committed transaction with ``synchronous=FULL`` so that a keypress, once
acknowledged, survives a crash or power cut.

Every label has a ``source`` (LABEL_SOURCES): a person's ("human") or an AI judge's ("judge").
A task holds at most one live label *per source*, so a judge never overwrites (nor blocks) a
person. Every reader and undo takes ``source="human"`` by default — what the Label screen, stats
and exports always meant — and ``source=None`` for every source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from store import db as dbmod
from store.db import dump_json
from store.errors import DuplicateLabel, NotFound
from store.models import LABEL_CHOICES, LABEL_SOURCES, LabelEvent, LabelTask
from store.refs import canonical_ref
from store.rows import row_to


class LabelsMixin:
    """Mixed into Store; relies on its _conns/_one/_all/_insert/_require helpers."""

    # Label events that no undo event points at (of every source; see _live_sql).
    _LIVE_SQL = (
        "SELECT e.* FROM label_events e WHERE e.kind = 'label' AND NOT EXISTS "
        "(SELECT 1 FROM label_events u WHERE u.kind = 'undo' AND u.undoes_event_id = e.id)"
    )

    @classmethod
    def _live_sql(cls, source: str | None) -> tuple[str, list[Any]]:
        """The live-label query of one source (None: all) and its parameters."""
        if source is None:
            return cls._LIVE_SQL, []
        if source not in LABEL_SOURCES:
            raise ValueError(
                f"Unknown label source {source!r}; expected one of: {', '.join(LABEL_SOURCES)}."
            )
        return cls._LIVE_SQL + " AND e.source = ?", [source]

    # ---- tasks ----------------------------------------------------------------------------

    def create_label_task(
        self,
        prompt: str,
        candidates: Iterable[Mapping[str, Any]],
        *,
        task_set: str | None = None,
        system: str | None = None,
        source: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> LabelTask:
        """``candidates``: [{"model_ref", "output", "generation_id"?}, ...]; the first is "a",
        the second "b" (the screen may show them swapped and records that on the label).
        Each model_ref (and a meta "pair") is stored in its canonical spelling (canonical_ref)."""
        cands = [self._check_candidate(i, c) for i, c in enumerate(candidates)]
        if isinstance((meta or {}).get("pair"), list):
            meta = {**meta, "pair": [canonical_ref(r) if isinstance(r, str) else r
                                     for r in meta["pair"]]}
        if len(cands) < 2:
            raise ValueError(
                f"A label task needs at least two candidates to compare, got {len(cands)}."
            )
        with self._conns.write() as db:
            for c in cands:
                self._require(db, "generations", c.get("generation_id"), "generation")
            new_id = self._insert(
                db,
                "label_tasks",
                {
                    "task_set": task_set,
                    "prompt": prompt,
                    "system": system,
                    "candidates": dump_json(cands, empty=[]),
                    "source": source,
                    "meta": dump_json(meta, empty={}),
                    "created_at": dbmod.now(),
                },
            )
        return self.get_label_task(new_id)

    @staticmethod
    def _check_candidate(index: int, cand: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(cand, Mapping):
            raise ValueError(f"candidate {index} must be a dict with model_ref and output")
        missing = [k for k in ("model_ref", "output") if not isinstance(cand.get(k), str)]
        if missing:
            raise ValueError(f"candidate {index} needs a text {' and '.join(missing)}")
        return {**cand, "model_ref": canonical_ref(cand["model_ref"])}

    def get_label_task(self, id: int) -> LabelTask:
        return self._get(LabelTask, "label_tasks", id, "label task")

    def list_label_tasks(
        self, task_set: str | None = None, *, unlabelled_only: bool = False,
        source: str | None = "human",
    ) -> list[LabelTask]:
        """In creation order; ``unlabelled_only`` drops tasks that have a live label from
        ``source`` (a person's by default: the judge having labelled a task keeps it open)."""
        where, params = [], []
        if task_set is not None:
            where.append("t.task_set = ?")
            params.append(task_set)
        if unlabelled_only:
            live_sql, live_params = self._live_sql(source)
            where.append(f"t.id NOT IN (SELECT task_id FROM ({live_sql}))")
            params.extend(live_params)
        sql = "SELECT t.* FROM label_tasks t"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [row_to(LabelTask, r) for r in self._all(sql + " ORDER BY t.id", params)]

    def task_sets(self) -> list[str]:
        rows = self._all(
            "SELECT DISTINCT task_set FROM label_tasks WHERE task_set IS NOT NULL ORDER BY task_set"
        )
        return [r["task_set"] for r in rows]

    # ---- events ---------------------------------------------------------------------------

    def add_label(
        self,
        task_id: int,
        choice: str,
        *,
        swapped: bool = False,
        edited: str | None = None,
        elapsed_ms: int | None = None,
        source: str = "human",
        principle: str | None = None,
        rationale: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> LabelEvent:
        """Record one keypress (or one judge verdict, ``source="judge"``, with the principle it
        cited, its rationale and ``detail``). ``choice`` is in candidate order (a = candidates[0]).

        Raises DuplicateLabel if the task already has a live label from ``source`` (undo it
        first); a live label from another source does not count.
        """
        if choice not in LABEL_CHOICES:
            raise ValueError(
                f"Unknown label choice {choice!r}; expected one of: {', '.join(LABEL_CHOICES)}."
            )
        live_sql, live_params = self._live_sql(source)
        with self._conns.write(durable=True) as db:
            if db.execute("SELECT 1 FROM label_tasks WHERE id = ?", [task_id]).fetchone() is None:
                raise NotFound("label task", task_id)
            live = db.execute(
                f"SELECT id FROM ({live_sql}) WHERE task_id = ? ORDER BY id DESC LIMIT 1",
                [*live_params, task_id],
            ).fetchone()
            if live is not None:
                raise DuplicateLabel(task_id, live[0])
            new_id = self._insert(
                db,
                "label_events",
                {
                    "task_id": task_id,
                    "kind": "label",
                    "choice": choice,
                    "swapped": int(bool(swapped)),
                    "edited": edited,
                    "elapsed_ms": None if elapsed_ms is None else int(elapsed_ms),
                    "undoes_event_id": None,
                    "created_at": dbmod.now(),
                    "source": source,
                    "principle": principle,
                    "rationale": rationale,
                    "detail": dump_json(detail, empty={}),
                },
            )
        return self.get_label_event(new_id)

    def undo_label(
        self, event_id: int | None = None, *, task_set: str | None = None,
        source: str | None = "human",
    ) -> LabelEvent | None:
        """Cancel the newest live label of ``source`` (within ``task_set`` if given), or label
        ``event_id`` (of whichever source).

        Appends and returns the ``undo`` event (its source is the undone label's); None when
        there is nothing to undo (or the given label is already undone). Repeated calls walk
        back through earlier labels.
        """
        live_sql, live_params = self._live_sql(source)
        with self._conns.write(durable=True) as db:
            if event_id is not None:
                target = db.execute(
                    "SELECT id, task_id, kind, source FROM label_events WHERE id = ?", [event_id]
                ).fetchone()
                if target is None:
                    raise NotFound("label event", event_id)
                if target[2] != "label":
                    raise ValueError(f"Event {event_id} is an undo; only labels can be undone.")
                still_live = db.execute(
                    f"SELECT 1 FROM ({self._LIVE_SQL}) WHERE id = ?", [event_id]
                ).fetchone()
                if still_live is None:
                    return None
            else:
                sql = f"SELECT l.id, l.task_id, l.kind, l.source FROM ({live_sql}) l"
                params: list[Any] = list(live_params)
                if task_set is not None:
                    sql += " JOIN label_tasks t ON t.id = l.task_id WHERE t.task_set = ?"
                    params.append(task_set)
                target = db.execute(sql + " ORDER BY l.id DESC LIMIT 1", params).fetchone()
                if target is None:
                    return None
            new_id = self._insert(
                db,
                "label_events",
                {
                    "task_id": target[1],
                    "kind": "undo",
                    "choice": None,
                    "swapped": 0,
                    "edited": None,
                    "elapsed_ms": None,
                    "undoes_event_id": target[0],
                    "created_at": dbmod.now(),
                    "source": target[3],
                },
            )
        return self.get_label_event(new_id)

    def get_label_event(self, id: int) -> LabelEvent:
        return self._get(LabelEvent, "label_events", id, "label event")

    def live_labels(
        self, task_set: str | None = None, source: str | None = "human"
    ) -> list[LabelEvent]:
        """Labels of ``source`` not undone, oldest first — at most one per task and source."""
        live_sql, params = self._live_sql(source)
        if task_set is None:
            rows = self._all(f"SELECT * FROM ({live_sql}) ORDER BY id", params)
        else:
            rows = self._all(
                f"SELECT l.* FROM ({live_sql}) l JOIN label_tasks t ON t.id = l.task_id"
                " WHERE t.task_set = ? ORDER BY l.id",
                [*params, task_set],
            )
        return [row_to(LabelEvent, r) for r in rows]

    def live_label(self, task_id: int, source: str = "human") -> LabelEvent | None:
        """The task's current label from ``source``, or None."""
        live_sql, params = self._live_sql(source)
        row = self._one(f"SELECT * FROM ({live_sql}) WHERE task_id = ?", [*params, task_id])
        return None if row is None else row_to(LabelEvent, row)

    def label_events(self, task_id: int | None = None) -> list[LabelEvent]:
        """The raw log (labels and undos), oldest first — for audit and agreement stats."""
        if task_id is None:
            rows = self._all("SELECT * FROM label_events ORDER BY id")
        else:
            rows = self._all("SELECT * FROM label_events WHERE task_id = ? ORDER BY id", [task_id])
        return [row_to(LabelEvent, r) for r in rows]
