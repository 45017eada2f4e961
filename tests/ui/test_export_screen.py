"""The Export screen: sources from the store, predicted sizes, refusals in words, and a real f16
export of the demo base model through the child process (parity passed, sha256 of the file).

The real exports take a few seconds each (the 3.7M-param demo model); everything else is fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, SelectionList, Static

from tuiapp import paths

from .conftest import text_of, wait_until

pytestmark = pytest.mark.anyio
needs_demo_model = pytest.mark.skipif(
    not (paths.DEMO_BASE_MODEL / "model.safetensors").exists(),
    reason="the demo base model is not built (tuneloop demo build-base)")


@pytest.fixture
def workspace(tmp_path):
    from tuiapp.workspace import open_workspace

    ws = open_workspace(tmp_path / "ws")  # seeded: the demo datasets and the demo base model
    yield ws
    ws.store.close()


def app_for(store, engine, home):
    from tuiapp.app import Settings, TuiApp

    return TuiApp(store=store, engine=engine,
                  settings=Settings(home=Path(home), refresh_interval=0, poll_interval=0))


async def open_export(pilot, app):
    await pilot.press("f7")
    screen = app.screen
    await wait_until(pilot, lambda: bool(screen.facts))
    return screen


def types(screen) -> SelectionList:
    return screen.query_one("#export-types", SelectionList)


def error_text(screen) -> str:
    box = screen.query_one("#export-error", Static)
    return text_of(box) if box.display else ""


# ---- the pieces without a screen ------------------------------------------------------------


def test_every_engine_type_is_offered_once():
    from tuiapp.engine.export.steps import QUANT_TYPES
    from tuiapp.screens.export_panels import OUTPUT_TYPES

    names = [name for name, _ in OUTPUT_TYPES]
    assert sorted(names) == sorted(QUANT_TYPES)


def test_sources_are_completed_runs_with_final_and_model_folders_newest_first(store, tmp_path):
    from tuiapp.engine.export.child import export_sources

    model_dir = tmp_path / "base"
    model_dir.mkdir()
    base = store.add_model("base", "hf", str(model_dir))
    done = store.create_run("sft", {}, output_dir=str(tmp_path / "r1"), status="completed")
    (tmp_path / "r1" / "final").mkdir(parents=True)
    store.add_model("r1-adapter", "adapter", str(tmp_path / "r1" / "final"), base_model_id=base.id)
    store.create_run("sft", {}, output_dir=str(tmp_path / "r2"), status="running")
    store.create_run("sft", {}, output_dir=str(tmp_path / "r3"), status="completed")  # no final/
    store.add_model("gone", "hf", str(tmp_path / "missing"))
    store.add_model("file", "gguf", str(tmp_path / "x.gguf"))

    sources = export_sources(store)
    assert sorted(s["ref"] for s in sources) == sorted([str(done.id), str(model_dir)])
    assert [s["created_at"] for s in sources] == sorted((s["created_at"] for s in sources),
                                                        reverse=True)
    assert {s["kind"] for s in sources} == {"run", "model"}


def test_unfinished_export_leaves_only_recorded_files(store, tmp_path):
    from tuiapp.engine.export.child import remove_unrecorded

    out = tmp_path / "out"
    out.mkdir()
    kept = out / "m-f16.gguf"
    for name in ("m-f16.gguf", "m-q8_0.gguf", "m-q4_k_m.gguf.partial", ".m-f16-source.gguf",
                 "unrelated.txt"):
        (out / name).write_bytes(b"x")
    (out / "merged").mkdir()
    store.add_export(str(kept), "gguf", quant="f16")  # checked and recorded: it stays

    removed = remove_unrecorded(out, "m", ["f16", "q8_0"], store, made_merged=True,
                                made_out_dir=True)
    assert sorted(p.name for p in out.iterdir()) == ["m-f16.gguf", "unrelated.txt"]
    assert {Path(p).name for p in removed} == {"m-q8_0.gguf", "m-q4_k_m.gguf.partial",
                                               ".m-f16-source.gguf", "merged"}


def test_a_dead_child_is_explained():
    from tuiapp.engine.export.child import died_message

    assert "killed by SIGKILL" in died_message(-9, "") and "out of memory" in died_message(-9, "")
    said = died_message(139, "Segmentation fault\nin quantize")
    assert "exit code 139" in said and "in quantize" in said


# ---- the screen ------------------------------------------------------------------------------


@needs_demo_model
async def test_lists_the_demo_model_and_predicts_sizes_of_the_chosen_types(workspace, engine):
    from tuiapp.engine.export.job import plan_export

    app = app_for(workspace.store, engine, workspace.home)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        demo = str(paths.DEMO_BASE_MODEL.resolve())
        assert demo in [s["ref"] for s in screen.sources]
        assert screen.ref == demo  # the newest (only) source is picked
        assert screen.quants == ["f16", "q8_0"]  # the defaults
        await wait_until(pilot, lambda: set(screen.predicted) == {"f16", "q8_0"})
        expected = plan_export(demo, workspace.store, ["f16", "q8_0", "q4_k_m"])["predicted"]
        assert screen.predicted == {q: expected[q] for q in ("f16", "q8_0")}
        assert "tuneloop export" in text_of(screen.query_one("#export-command"))

        types(screen).select("q4_k_m")
        await wait_until(pilot, lambda: "q4_k_m" in screen.predicted)
        assert screen.predicted == expected
        shown = text_of(screen.query_one("#export-sizes"))
        assert "q4_k_m" in shown and "total" in shown
        assert "--quant f16,q8_0,q4_k_m" in text_of(screen.query_one("#export-command"))

        types(screen).deselect_all()
        await pilot.pause()
        assert "No output type chosen" in text_of(screen.query_one("#export-sizes"))


async def test_start_refuses_in_words(make_app, store, tmp_path):
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        assert screen.sources == []
        await pilot.press("ctrl+s")
        assert "Pick a source first" in error_text(screen)

        screen.query_one("#export-folder").value = str(tmp_path / "nowhere")
        await wait_until(pilot, lambda: screen.plan_error is not None)
        await pilot.press("ctrl+s")
        assert "neither a run id nor an existing folder" in error_text(screen)

        types(screen).deselect_all()
        await pilot.pause()
        await pilot.press("ctrl+s")
        assert "Choose at least one output type" in error_text(screen)
        assert not screen.running


@needs_demo_model
async def test_in_memory_store_cannot_be_exported_from(make_app):
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        screen.query_one("#export-folder").value = str(paths.DEMO_BASE_MODEL)
        await wait_until(pilot, lambda: bool(screen.predicted))
        await pilot.press("ctrl+s")
        assert "needs a store file" in error_text(screen)
        assert not screen.running


@needs_demo_model
async def test_real_f16_export_passes_parity_and_shows_the_files_sha256(workspace, engine):
    app = app_for(workspace.store, engine, workspace.home)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        types(screen).deselect("q8_0")
        await wait_until(pilot, lambda: set(screen.predicted) == {"f16"})
        await pilot.press("ctrl+s")
        assert screen.running
        await wait_until(pilot, lambda: not screen.running, timeout=120)

        assert screen.error is None, screen.error
        result = screen.result
        assert result["ok"] and [f["quant"] for f in result["files"]] == ["f16"]
        f16 = result["files"][0]
        path = Path(f16["path"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f16["sha256"] == digest and path.parent == Path(screen.out_dir)
        assert not list(path.parent.glob("*.partial"))

        row = [str(c) for c in screen.query_one("#export-results", DataTable).get_row_at(0)]
        assert row[0] == "f16" and row[2] == digest[:12] and row[3] == "passed"
        assert row[5] == "100%" and row[6] == "3/3"  # top-1 agreement, greedy continuations
        detail = text_of(screen.query_one("#export-detail"))
        assert digest in detail and "parity passed" in detail

        await wait_until(pilot, lambda: screen.facts.get("exports") == "1")
        stored = workspace.store.list_exports()[0]
        assert (stored.path, stored.sha256, stored.status) == (str(path), digest, "ok")
        assert [str(c) for c in screen.query_one("#export-rows", DataTable).get_row_at(0)][5] \
            == digest[:12]

        await pilot.press("ctrl+y")
        assert app.clipboard == digest


@needs_demo_model
async def test_cancel_stops_the_child_and_leaves_no_unchecked_file(workspace, engine):
    app = app_for(workspace.store, engine, workspace.home)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        await wait_until(pilot, lambda: bool(screen.predicted))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.out_dir is not None, timeout=60)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: not screen.running, timeout=60)

        assert screen.outcome == "cancelled" and screen.result is None
        assert "Cancelled" in text_of(screen.query_one("#export-step"))
        out = Path(screen.out_dir)
        recorded = {e.path for e in workspace.store.list_exports()}
        left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        assert all(str(p) in recorded for p in left), left


# ---- a child that dies, and a file that failed parity ------------------------------------------


def fake_child(tmp_path, body: str) -> str:
    """An executable standing in for the Python running export_child (its arguments ignored)."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(0o755)
    return str(script)


def test_a_killed_child_is_reported_and_its_partial_file_removed(store, tmp_path):
    from tuiapp.engine.export.child import ExportProcess, died_message

    out = tmp_path / "out"
    start = json.dumps({"event": "start", "out_dir": str(out), "stem": "m", "quants": ["f16"],
                        "made_out_dir": True, "made_merged": False})
    python = fake_child(tmp_path, f"mkdir -p {out}\ntouch {out}/m-f16.gguf.partial\n"
                                  f"echo '{start}'\necho 'merging' >&2\nkill -9 $$\n")
    process = ExportProcess(tmp_path, tmp_path / "db", "1", ["f16"], python=python)
    events = list(process.events())
    assert [e["event"] for e in events] == ["start"]
    assert process.returncode == -9 and not process.cancelled
    assert "SIGKILL" in died_message(process.returncode, process.stderr_tail())
    assert process.stderr_tail() == "merging"
    removed = process.clean_after_kill(store)
    assert not out.exists() and str(out / "m-f16.gguf.partial") in removed
    process.close()


@needs_demo_model
async def test_a_child_dying_shows_its_exit_code_and_last_output(workspace, engine, tmp_path,
                                                                 monkeypatch):
    from functools import partial

    from tuiapp.engine.export import child as export_child

    python = fake_child(tmp_path, "echo 'Traceback: something broke in C' >&2\nexit 7\n")
    monkeypatch.setattr(export_child, "ExportProcess",
                        partial(export_child.ExportProcess, python=python))
    app = app_for(workspace.store, engine, workspace.home)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_export(pilot, app)
        await wait_until(pilot, lambda: bool(screen.predicted))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.running, timeout=30)
        assert screen.outcome == "failed"
        said = error_text(screen)
        assert "died with exit code 7" in said and "something broke in C" in said
        assert screen.query_one("#export-cancel").disabled  # nothing left to cancel


def test_a_failed_file_shows_red_with_its_reason():
    from tuiapp.screens.export_panels import file_detail, outcome_text, result_cells

    failed = {"quant": "q2_k", "path": "/x/m-q2_k.failed.gguf", "size_bytes": 2048,
              "predicted_bytes": 2000, "sha256": "ab" * 32, "status": "failed",
              "reasons": ["top-1 agreement 41% is below 90%"],
              "figures": {"max_abs_diff": 7.5, "top1_agreement": 0.41, "greedy_agreeing": 0,
                          "greedy_prompts": 3, "tokenization_identical": True},
              "parity": {"fallbacks": []}}
    cells = result_cells(failed)
    assert [str(c) for c in cells] == ["q2_k", "2.0 KiB", "ab" * 6, "FAILED", "7.5", "41%", "0/3"]
    assert cells[3].style == "red"
    detail = str(file_detail(failed))
    assert "parity FAILED" in detail and "top-1 agreement 41% is below 90%" in detail
    assert "ab" * 32 in detail
    outcome = str(outcome_text({"files": [failed], "out_dir": "/x", "notes": []}))
    assert "parity failed for q2_k" in outcome and "*.failed.gguf" in outcome


@needs_demo_model
def test_predicting_sizes_loads_no_torch_into_the_tui_process():
    """The plan worker runs in the TUI process: it may read headers, never import torch."""
    import subprocess
    import sys

    code = ("import sys; from store import Store; from tuiapp.engine.export.child import "
            "plan_sizes, export_sources; s = Store(':memory:'); export_sources(s); "
            f"plan_sizes({str(paths.DEMO_BASE_MODEL)!r}, s, ['f16', 'q4_k_m']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'llama_cpp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
