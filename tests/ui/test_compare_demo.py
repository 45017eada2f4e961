"""The demo's Done-when, for real: after an SFT run on a fresh demo home, the Compare screen
offers base and that run, both answer the same held-out question side by side, and both answers
are stored as generations under the right model refs (the real engine, the committed demo base
model, a few SFT steps through the real runner; nothing downloaded)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tuiapp import paths
from tuiapp.screens.compare_demo import heldout_prompt, show_base_vs_sft
from tuiapp.widgets.output_pane import OutputPane

pytest.importorskip("torch")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").exists(),
                       reason="the demo base model is not built"),
]

PRESET = paths.REPO_ROOT / "sample_data" / "presets" / "demo-sft-lora.toml"


@pytest.fixture(scope="module")
def sft_home(tmp_path_factory):
    """A demo home with one finished SFT run (4 steps: enough to have an adapter)."""
    from tuiapp.__main__ import app

    home = tmp_path_factory.mktemp("compare-demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # the training child inherits it
        result = CliRunner().invoke(app, ["--home", str(home), "train", "sft", "--config",
                                          str(PRESET), "--set", "max_steps=4"])
    assert result.exit_code == 0, result.output
    return home


async def test_base_and_sft_answer_the_same_heldout_question_side_by_side(sft_home):
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.workspace import open_workspace

    ws = open_workspace(sft_home)
    (run,) = ws.store.list_runs(status="completed")
    assert run.kind == "sft"
    app = TuiApp(store=ws.store, engine=Engine(),
                 settings=Settings(home=ws.home, refresh_interval=0, poll_interval=0))
    prompt = heldout_prompt(0)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("f5")
            screen = app.screen
            refs = await show_base_vs_sft(pilot, screen, timeout_s=50)
            assert refs == ["base", f"run:{run.id}"]
            offered = dict((ref, label) for label, ref in screen.choices)
            assert "base" in offered and "(sft)" in offered[f"run:{run.id}"]
            panes = [screen.query_one(f"#cmp-pane-{i}", OutputPane) for i in range(2)]
            assert [p.state for p in panes] == ["done", "done"]
            assert all(p.text.strip() for p in panes)
            assert [p.title_text for p in panes] == [offered["base"], offered[f"run:{run.id}"]]
            assert all(p.figures["tokens"] > 0 and p.figures["tokens_per_s"] > 0 for p in panes)
            # (training samples of the same question are stored too, under run:N@step)
            rows = {g.model_ref: g for g in ws.store.list_generations()
                    if g.prompt == prompt and g.step is None}
            assert set(rows) == {"base", f"run:{run.id}"}
            assert rows["base"].output == panes[0].text and rows["base"].run_id is None
            assert rows[f"run:{run.id}"].output == panes[1].text
            assert rows[f"run:{run.id}"].run_id == run.id
            assert [p.figures["generation_id"] for p in panes] == \
                [rows["base"].id, rows[f"run:{run.id}"].id]
    finally:
        ws.store.close()


def test_heldout_prompt_reads_the_demo_set():
    assert heldout_prompt(0) == "Which town is Tesosto from?"
    with pytest.raises(ValueError, match="no question 100000"):
        heldout_prompt(100000)
