"""Label / Export show real store state and the command that does the work (Train and Compare are
real screens now: tests/ui/test_train.py, tests/ui/test_compare.py)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from .conftest import text_of, wait_until

pytestmark = pytest.mark.anyio


def rows(screen, table_id: str) -> list[list[str]]:
    table = screen.query_one(f"#{table_id}", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_area(pilot, app, key: str):
    await pilot.press(key)
    screen = app.screen
    await wait_until(pilot, lambda: bool(screen.facts))
    return screen


async def test_empty_store_says_so_in_every_overview(make_app):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        for key, table_id, command in (
            ("f6", "label-choices", "tuneloop labels new"),
            ("f7", "export-rows", "tuneloop export"),
        ):
            screen = await open_area(pilot, app, key)
            assert rows(screen, table_id) == []
            assert not screen.query_one(f"#{table_id}").display
            assert screen.query_one(f"#{table_id}-empty").display
            assert command in text_of(screen.query_one(".commands"))


async def test_label_counts_live_labels_and_tasks(make_app, store):
    cands = [{"model_ref": "a", "output": "x"}, {"model_ref": "b", "output": "y"}]
    t1 = store.create_label_task("p1", cands, task_set="s")
    t2 = store.create_label_task("p2", cands, task_set="s")
    store.create_label_task("p3", cands, task_set="s")
    store.add_label(t1.id, "a")
    store.add_label(t2.id, "tie")
    store.undo_label()  # undoes the tie
    store.add_label(t2.id, "b")
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_area(pilot, app, "f6")
        live = store.live_labels()
        assert len(live) == 2
        assert screen.facts["all sets"] == "2 live labels = 2 + 0 repeats + 0 in other sets · 3 tasks"
        assert screen.facts["this set"] == "2/3 pairs labelled · 1 to go"
        assert rows(screen, "label-choices") == [["A", "1"], ["B", "1"]]


async def test_export_shows_store_rows(make_app, store):
    model = store.add_model("tiny-base", "hf", "/models/tiny")
    store.add_export(
        "/exports/tiny-q8.gguf",
        "gguf",
        quant="q8_0",
        size_bytes=3 * 1024 * 1024,
        sha256="f" * 64,
        model_id=model.id,
    )
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_area(pilot, app, "f7")
        row = rows(screen, "export-rows")[0]
        assert row[2:6] == ["gguf", "q8_0", "3.0 MiB", "f" * 12]
