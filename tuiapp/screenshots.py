"""Regenerate screenshots/: one SVG per area (plus help) from a fresh demo workspace.

    python -m tuiapp.screenshots [--out screenshots] [--size 120x36] [--sft-steps 60]

Runs the real app headless on a throw-away home seeded with the demo datasets and the real
Engine, after a short real SFT run of the demo preset (`--sft-steps`, about half a minute), so the
pictures show what a user sees after a first run — nothing is staged: the Train shot runs the
real pre-flight, Compare has base and that SFT run answer a held-out question, Export exports
the screen's default source (that SFT run; the demo base model without one) for real.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuiapp import paths

SHOTS = (
    # (file, mode, Datasets tab or None)
    ("01-datasets.svg", "datasets", "tab-stats"),
    ("02-train.svg", "train", None),
    ("03-runs.svg", "runs", None),
    ("04-compare.svg", "compare", None),
    ("05-label.svg", "label", None),
    ("06-export.svg", "export", None),
)
HELP_SHOT = "07-help.svg"
DEMO_FILE = "sft.jsonl"
COMPARE_PROMPT = "Which town is Tesosto from?"  # the first held-out demo question


async def _settle(pilot, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)
    await pilot.pause(0.1)


AREA_KEYS = {
    "datasets": "f2",
    "train": "f3",
    "runs": "f4",
    "compare": "f5",
    "label": "f6",
    "export": "f7",
}


async def _prepare(pilot, screen, mode: str, tab: str | None) -> None:
    """Wait until `screen` shows real content (for Datasets: the demo SFT file, `tab` open)."""
    if mode == "datasets":
        demo = (paths.DEMO_DIR / DEMO_FILE).resolve()
        await _settle(
            pilot,
            lambda: demo in [p.resolve() for p in screen.file_paths],
            10,
            "the demo files in the file list",
        )
        screen.open_path(demo)
        # the first stats load the tokenizer (transformers): allow for a slow machine
        await _settle(
            pilot,
            lambda: screen.stats is not None and screen.examples is not None,
            120,
            "validation and stats",
        )
        screen.query_one("#ds-tabs").active = tab
    elif mode == "runs":
        await _settle(pilot, lambda: screen.loaded, 10, "the runs table")
    elif mode == "train":
        await _settle(
            pilot,
            lambda: screen.choices_loaded and screen.config is not None,
            10,
            "the Train form with its default preset",
        )
        # the real pre-flight of the default preset (it reads the model and the data)
        screen.action_preflight()
        await _settle(
            pilot,
            lambda: not screen.preflight_running and screen.preflight_report is not None,
            120,
            "pre-flight",
        )
    elif mode == "compare":
        from tuiapp.screens import compare_demo

        await _settle(pilot, lambda: screen.choices_loaded, 10, "the Compare model list")
        try:  # base and the SFT run side by side on a held-out question
            await compare_demo.show_base_vs_sft(pilot, screen)
        except ValueError:  # no SFT run (--sft-steps 0): the models a new user has answer
            if screen.choices:
                screen.set_prompt(COMPARE_PROMPT)
                screen.action_generate()
                await _settle(pilot, lambda: not screen.generating, 180, "the Compare answers")
    elif mode == "export":
        # a real export of the default source (the SFT run): f16 + q8_0 (defaults) + q4_k_m, Modelfile, card
        await _settle(pilot, lambda: bool(screen.predicted), 30, "the predicted sizes")
        screen.query_one("#export-types").select("q4_k_m")
        await _settle(pilot, lambda: "q4_k_m" in screen.predicted, 30, "the q4_k_m size")
        screen.query_one("#export-ollama").value = True
        screen.query_one("#export-card").value = True
        screen.action_start()
        await _settle(pilot, lambda: not screen.running, 180, "the export")
        if screen.outcome != "finished":
            raise RuntimeError(f"the screenshot export did not finish: {screen.outcome}")
    else:
        await _settle(pilot, lambda: bool(screen.facts), 10, f"the {mode} screen")


async def capture(out: Path, size: tuple[int, int], home: Path) -> list[Path]:
    from tuiapp.app import Settings, TuiApp
    from tuiapp.engine.facade import Engine
    from tuiapp.workspace import open_workspace

    ws = open_workspace(home)
    app = TuiApp(
        store=ws.store, engine=Engine(), settings=Settings(home=ws.home, refresh_interval=0)
    )
    written: list[Path] = []
    async with app.run_test(size=size) as pilot:
        for filename, mode, tab in SHOTS:
            await pilot.press(AREA_KEYS[mode])
            await _prepare(pilot, app.screen, mode, tab)
            await pilot.pause(0.2)
            written.append(Path(app.save_screenshot(filename, str(out))))
        await pilot.press("f1")
        await pilot.pause(0.2)
        written.append(Path(app.save_screenshot(HELP_SHOT, str(out))))
    ws.store.close()
    return written


def _train_sft(home: Path, steps: int) -> bool:
    """A short real SFT run of the demo preset, through the CLI and its runner."""
    preset = paths.REPO_ROOT / "sample_data" / "presets" / "demo-sft-lora.toml"
    cmd = [sys.executable, "-m", "tuiapp", "--home", str(home), "train", "sft", "--config", str(preset),
           "--set", f"max_steps={steps}", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"error: the screenshot SFT run failed (exit {done.returncode}):\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuiapp.screenshots", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out",
        default=str(paths.REPO_ROOT / "screenshots"),
        help="folder for the SVG files (default: the repo's screenshots/)",
    )
    parser.add_argument("--size", default="120x36", help="terminal size WIDTHxHEIGHT")
    parser.add_argument("--sft-steps", type=int, default=60,
                        help="steps of the demo SFT run made first (0: none, a brand-new home)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 120x36, not {args.size!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tuneloop-shots-") as home:
        if args.sft_steps > 0 and not _train_sft(Path(home), args.sft_steps):
            return 1
        try:
            written = asyncio.run(capture(out, (width, height), Path(home)))
        except TimeoutError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
