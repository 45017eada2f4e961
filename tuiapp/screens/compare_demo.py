"""The demo's Compare moment: the base model and the newest SFT run answer the same held-out
question side by side. The screenshot script and the demo test put the screen in that state
with `show_base_vs_sft`; nothing here is specific to tests.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tuiapp import paths

HELDOUT_FILE = paths.DEMO_DIR / "eval_heldout.jsonl"


def heldout_prompt(index: int = 0) -> str:
    """The `index`-th question of the demo's held-out set (facts the SFT data never asks about)."""
    with HELDOUT_FILE.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i == index:
                return json.loads(line)["prompt"]
    raise ValueError(f"{HELDOUT_FILE} has no question {index}")


def latest_sft_ref(screen: Any) -> str | None:
    """`run:N` of the newest completed SFT run the screen offers (it offers runs with a model)."""
    offered = {ref for _, ref in screen.choices}
    runs = sorted((r for r in screen.store.list_runs(status="completed") if r.kind == "sft"),
                  key=lambda r: r.id, reverse=True)
    return next((f"run:{r.id}" for r in runs if f"run:{r.id}" in offered), None)


def start_base_vs_sft(screen: Any, prompt: str | None = None) -> list[str]:
    """Pick base and the newest SFT run, type the held-out question and press Generate.
    Returns the two REFs; a ValueError says what the workspace lacks."""
    if "base" not in {ref for _, ref in screen.choices}:
        raise ValueError("the demo base model is not built: run `tuneloop demo build-base`")
    sft = latest_sft_ref(screen)
    if sft is None:
        raise ValueError("no finished SFT run: run `tuneloop train sft --config "
                         "sample_data/presets/demo-sft-lora.toml` first")
    from tuiapp.widgets.model_picker import ModelPicker

    refs = ["base", sft]
    screen.query_one(ModelPicker).select(refs)
    screen.set_prompt(prompt or heldout_prompt())
    screen.action_generate()
    return refs


async def show_base_vs_sft(pilot: Any, screen: Any, prompt: str | None = None,
                           timeout_s: float = 180.0) -> list[str]:
    """`start_base_vs_sft` once the model list has loaded, then wait for both answers."""
    await _wait(pilot, lambda: screen.choices_loaded, timeout_s, "the Compare model list")
    refs = start_base_vs_sft(screen, prompt)
    await pilot.pause()
    await _wait(pilot, lambda: not screen.generating, timeout_s, "the base and SFT answers")
    return refs


async def _wait(pilot: Any, done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")
        await pilot.pause(0.05)
