"""Datasets screen: pick → validation report → preview at the problem's line → stats → import."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, Input, OptionList, Select

from tuiapp.screens.datasets import DatasetsScreen
from tuiapp.screens.modals import NameScreen
from tuiapp.widgets.file_preview import FilePreview
from tuiapp.widgets.histogram import Histogram

from .conftest import BAD_LINES, text_of, wait_until

pytestmark = pytest.mark.anyio


def option_index(screen: DatasetsScreen, path: Path) -> int:
    return screen.file_paths.index(path)


async def pick(pilot, screen: DatasetsScreen, path: Path) -> None:
    """Choose `path` in the file list with the keyboard, as a user would."""
    await wait_until(pilot, lambda: path in screen.file_paths)
    files = screen.query_one("#ds-files", OptionList)
    files.focus()
    files.highlighted = option_index(screen, path)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.report is not None and screen.current_path == path)


async def test_file_list_shows_workspace_files_and_marks_imported_ones(
    make_app, store, data_files, engine
):
    version = store.add_dataset_version(
        "good", str(data_files["good"]), "h1", "messages", "sft", 10
    )
    elsewhere = data_files["good"].parent / "imported_elsewhere.jsonl"
    elsewhere.write_text("{}\n")
    store.add_dataset_version("other", str(elsewhere), "h2", "messages", "sft", 1)
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.file_paths) == 3)
        assert screen.file_paths[:2] == [data_files["good"], data_files["bad"]]
        assert screen.file_paths[2] == elsewhere.resolve()  # versions outside the list are added
        assert screen.imported[data_files["good"].resolve()] == version.id
        options = screen.query_one("#ds-files", OptionList)
        assert str(options.get_option_at_index(0).prompt).startswith(f"✓#{version.id}")
        assert not str(options.get_option_at_index(1).prompt).startswith("✓")
        assert ("list_workspace_files", Path(app.settings.home)) in engine.calls


async def test_picking_a_file_shows_its_problems_and_preview_jumps_to_the_line(
    make_app, data_files, engine
):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["bad"])
        assert ("validate", ("bad.jsonl", None)) in engine.calls
        table = screen.query_one("#ds-problems", DataTable)
        assert table.row_count == 3
        assert [str(table.get_row_at(i)[0]) for i in range(3)] == ["3", "7", "8"]
        # brackets in a message are text, not markup
        assert "[sic]" in str(table.get_row_at(1)[3])
        summary = text_of(screen.query_one("#ds-summary"))
        assert "2 errors" in summary and "1 warning" in summary
        preview = screen.query_one("#ds-preview", FilePreview)
        await wait_until(pilot, lambda: preview.line == 3)  # the first problem's line
        assert preview.highlighted_text == BAD_LINES[2]  # kept as in the file
        table.focus()
        await pilot.press("down")  # to the problem on line 7
        await wait_until(pilot, lambda: preview.line == 7)
        assert preview.highlighted_text == BAD_LINES[6]
        assert preview.first_line == 2 and len(preview.lines) == 7  # 5 lines of context, EOF


async def test_stats_tab_shows_the_engines_numbers_and_a_histogram(make_app, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        await wait_until(pilot, lambda: screen.stats is not None and screen.examples is not None)
        assert ("stats", 1024) in engine.calls  # the max-length field's default
        await pilot.press("ctrl+f")
        screen.query_one("#ds-tabs").active = "tab-stats"
        await pilot.pause()
        stats = text_of(screen.query_one("#ds-stats"))
        for shown in ("42.5", "131", "10.0%", "5=2", "messages 10  tokens 77"):
            assert shown in stats
        histogram = screen.query_one("#ds-histogram", Histogram)
        assert [(label, count) for label, count, _ in histogram.bins] == [
            ("12–31", 2),
            ("32–51", 4),
            ("52–71", 1),
            ("72–91", 2),
            ("92–111", 0),
            ("112–131", 1),
        ]
        assert not any(hot for _, _, hot in histogram.bins)
        examples = text_of(screen.query_one("#ds-examples"))
        assert "<|assistant|>" in examples and "a2" in examples

        # a new max length recomputes stats and marks the bins past it
        max_len = screen.query_one("#ds-maxlen", Input)
        max_len.value = "100"
        max_len.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: ("stats", 100) in engine.calls)
        await wait_until(pilot, lambda: any(hot for _, _, hot in histogram.bins))
        assert [label for label, _, hot in histogram.bins if hot] == ["92–111", "112–131"]


async def test_typed_path_is_validated_and_a_missing_one_is_reported(make_app, data_files):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        path_input = screen.query_one("#ds-path", Input)
        assert path_input.has_focus
        path_input.value = str(data_files["good"].parent / "nope.jsonl")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.last_error and "No file at" in screen.last_error
        assert "No file at" in text_of(screen.query_one("#ds-summary"))
        path_input.value = str(data_files["good"])
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report is not None)
        assert screen.current_path == data_files["good"]


async def test_kind_selector_revalidates_with_that_kind(make_app, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        screen.query_one("#ds-kind", Select).value = "preference"
        await wait_until(pilot, lambda: ("validate", ("good.jsonl", "preference")) in engine.calls)


async def test_import_through_the_modal_creates_a_version(make_app, store, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, NameScreen))
        name_input = app.screen.query_one("#name-input", Input)
        assert name_input.value == "good"
        name_input.value = "my-chat"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.last_version is not None)
        versions = store.list_dataset_versions()
        assert [(v.name, v.rows, v.kind) for v in versions] == [("my-chat", 10, "sft")]
        assert screen.last_version.id == versions[0].id
        assert ("import_dataset", ("good.jsonl", "my-chat", None)) in engine.calls
        assert f"version #{versions[0].id}" in text_of(screen.query_one("#ds-summary"))
        await wait_until(pilot, lambda: screen.imported.get(data_files["good"].resolve()))
        await wait_until(
            pilot,
            lambda: str(
                screen.query_one("#ds-files", OptionList).get_option_at_index(0).prompt
            ).startswith("✓"),
        )


async def test_import_cancelled_in_the_modal_writes_nothing(make_app, store, data_files):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        screen.query_one("#ds-import", Button).press()
        await wait_until(pilot, lambda: isinstance(app.screen, NameScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, NameScreen))
        assert store.list_dataset_versions() == []


async def test_import_refuses_a_file_with_errors(make_app, store, data_files, engine):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["bad"])
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, NameScreen)
        assert "2 error(s)" in screen.last_error and "fix them" in screen.last_error
        assert store.list_dataset_versions() == []
        assert not any(call[0] == "import_dataset" for call in engine.calls)


async def test_engine_failure_is_a_readable_message_not_a_crash(make_app, data_files, engine):
    def broken(path, kind=None):
        raise OSError("the disk said no")

    engine.validate = broken
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        screen.open_path(data_files["good"])
        await wait_until(pilot, lambda: screen.last_error is not None)
        assert screen.last_error == "validation failed: the disk said no"
        assert app.is_running


async def test_results_for_a_file_the_user_left_are_dropped(make_app, data_files, engine):
    gate = threading.Event()
    engine.gate = gate
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        screen.open_path(data_files["bad"])  # blocks in validate until the gate opens
        await pilot.pause()
        engine.gate = None
        screen.open_path(data_files["good"])
        await wait_until(pilot, lambda: screen.report is not None)
        gate.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.current_path == data_files["good"]
        assert screen.report.path == str(data_files["good"])
        assert screen.query_one("#ds-problems", DataTable).row_count == 0


async def test_importing_an_imported_file_asks_for_confirmation_first(make_app, store, data_files):
    from tuiapp.screens.modals import ConfirmScreen

    first = store.add_dataset_version("good", str(data_files["good"]), "h", "messages", "sft", 10)
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.imported)
        await pick(pilot, screen, data_files["good"])
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"version #{first.id}" in app.screen.question
        await pilot.press("escape")  # no: nothing else happens
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, NameScreen))
        app.screen.query_one("#name-input", Input).value = "good-again"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.last_version is not None)
        assert [v.name for v in store.list_dataset_versions()] == ["good", "good-again"]
        await wait_until(
            pilot, lambda: screen.imported[data_files["good"].resolve()] == screen.last_version.id
        )


async def test_problems_without_a_text_line_explain_instead_of_previewing(
    make_app, data_files, engine, tmp_path
):
    from .fakes import FakeProblem, FakeReport

    columnar = tmp_path / "data" / "rows.parquet"
    columnar.write_bytes(b"PAR1 not really")
    engine.files.append(columnar)
    engine.reports[columnar.name] = FakeReport(
        str(columnar),
        "messages",
        "sft",
        4,
        problems=[FakeProblem(str(columnar), 2, "messages", "empty list")],
    )
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, columnar)
        preview = screen.query_one("#ds-preview", FilePreview)
        await pilot.pause()
        # the table's cursor sits on the row-2 problem: it is explained, the bytes are not shown
        assert preview.line is None
        assert "Row 2 of rows.parquet: a columnar file has no text line" in text_of(preview)
        assert "PAR1" not in text_of(preview)


async def test_a_clean_file_says_so_instead_of_an_empty_table(make_app, data_files):
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick(pilot, screen, data_files["good"])
        assert not screen.query_one("#ds-problems").display
        note = screen.query_one("#ds-no-problems")
        assert note.display and "all 10 rows are valid sft data" in text_of(note)
        await pick(pilot, screen, data_files["bad"])
        assert screen.query_one("#ds-problems").display and not note.display
