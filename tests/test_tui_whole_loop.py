"""Issue 23's Done-when: the whole loop — SFT, Compare, label 20 pairs, export them, DPO from
them, Compare three models, export GGUF — done in the TUI alone, driven by keys only.

The real app as `tuiapp.__main__.build_app` wires it (real Store in a fresh demo home, the real
engine facade and its runner), on the committed demo base model. The test acts ONLY through
`pilot.press` (area keys, Tab, typed characters, the screens' bindings); it reads the store and
screen state only to know when to go on. Step counts are tiny: this checks the wiring of the
loop, not the quality of the models."""

from __future__ import annotations

import asyncio
import time

import pytest

from tuiapp import paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").exists(),
                       reason="the demo base model is not built"),
]

N_LABELS = 20
KEY_NAMES = {",": "comma", ":": "colon", "/": "slash", ".": "full_stop", "-": "minus",
             " ": "space", "_": "underscore", "?": "question_mark", "'": "apostrophe"}


async def until(pilot, predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*[KEY_NAMES.get(ch, ch) for ch in text])


async def tab_to(pilot, app, widget, what: str, limit: int = 60) -> None:
    """Tab until `widget` has focus (Tab is how a user walks a form)."""
    for _ in range(limit):
        if app.focused is widget:
            return
        await pilot.press("tab")
    assert app.focused is widget, f"Tab never reached {what}"


async def replace_text(pilot, text: str) -> None:
    """Clear the focused Input (end, then delete everything left of the cursor) and type."""
    await pilot.press("end", "ctrl+u")
    await type_text(pilot, text)


def runs_of(store, kind: str):
    return [r for r in store.list_runs() if r.kind == kind]


async def train_by_keys(pilot, app, store, kind: str, steps: int):
    """On Train (already showing `kind`): max_steps typed, ^t pre-flight, ^s start, wait."""
    screen = app.screen
    await until(pilot, lambda: screen.choices_loaded and screen.preset_kind == kind
                and screen.requested_dataset is None, f"Train's {kind} lists")
    await pilot.pause()
    before = {r.id for r in store.list_runs()}
    field = screen.form.control("max_steps")
    await tab_to(pilot, app, field, "max_steps")
    await replace_text(pilot, str(steps))
    await until(pilot, lambda: field.value == str(steps) and "max_steps" not in screen.errors,
                "max_steps typed")
    await pilot.press("ctrl+t")
    await until(pilot, lambda: screen.preflight_report is not None
                and not screen.preflight_running, "pre-flight", timeout=120)
    await pilot.press("ctrl+s")
    await until(pilot, lambda: any(r.id not in before for r in runs_of(store, kind)),
                f"the {kind} run to be created")
    (run,) = [r for r in runs_of(store, kind) if r.id not in before]
    await until(pilot, lambda: store.get_run(run.id).status in ("completed", "failed",
                                                                 "cancelled"),
                f"the {kind} run to finish", timeout=240)
    run = store.get_run(run.id)
    assert run.status == "completed", (run.status, run.error if hasattr(run, "error") else "")
    return run


async def compare_by_keys(pilot, app, store, refs: list[str], prompt: str) -> None:
    """Compare: the slots offer base first; `refs` beyond the two filled slots are typed in
    REF; the prompt is typed; ^g generates; wait until every model has a stored answer."""
    from tuiapp.widgets.model_picker import ModelPicker

    await pilot.press("f5")
    screen = app.screen
    await until(pilot, lambda: screen.choices_loaded, "Compare's model list")
    picker = screen.query_one(ModelPicker)
    await until(pilot, lambda: picker.refs()[:2] == refs[:2], f"slots showing {refs[:2]}",
                timeout=10)
    if len(refs) > 2:
        typed = screen.query_one("#mp-typed")
        await tab_to(pilot, app, typed, "the REF field")
        await replace_text(pilot, refs[2])
    assert picker.refs() == refs
    box = screen.query_one("#cmp-prompt")
    await tab_to(pilot, app, box, "the prompt")
    await type_text(pilot, prompt)
    await pilot.press("ctrl+g")
    stored = lambda: {g.model_ref for g in store.list_generations()  # noqa: E731
                      if g.prompt == prompt and g.step is None}
    await until(pilot, lambda: stored() >= set(refs) and not screen.generating,
                f"answers of {refs} stored", timeout=180)


async def whole_loop(home) -> None:
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.workspace import open_workspace

    ws = open_workspace(home)
    store = ws.store
    app = TuiApp(store=store, engine=Engine(),
                 settings=Settings(home=ws.home, refresh_interval=0, poll_interval=0.2))
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            # 1. SFT
            await pilot.press("f3")
            sft = await train_by_keys(pilot, app, store, "sft", 4)
            # 2. Compare base vs the SFT run
            await compare_by_keys(pilot, app, store, ["base", f"run:{sft.id}"],
                                  "Which town is Tesosto from?")
    finally:
        store.close()


def test_the_whole_loop_by_keys_only(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the training children inherit it
    started = time.perf_counter()
    asyncio.run(whole_loop(tmp_path / "home"))
    print(f"\nwhole loop by keys: {time.perf_counter() - started:.1f} s")
