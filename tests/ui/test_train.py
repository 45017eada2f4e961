"""Train screen: the form from the config fields, validation, pre-flight, submit, the queue,
cancel/resume and the live monitor fed by the app's poll worker — with a scripted engine."""

from __future__ import annotations

import json
import threading
import time

import pytest
from textual.widgets import Button, DataTable, Input, Select, Switch

from tuiapp.app import Settings, TuiApp
from tuiapp.engine.train.config import SFTJobConfig, field_help
from tuiapp.messages import RunProgress
from tuiapp.screens.modals import ConfirmScreen
from tuiapp.screens.train import JOB_FIELDS, TrainScreen
from tuiapp.widgets.config_form import ConfigForm
from tuiapp.widgets.loss_chart import LossChart

from .conftest import text_of, wait_until
from .fakes import PREFLIGHT_OK, FakeTrainingEngine
from .runs_world import FIXED_NOW

pytestmark = pytest.mark.anyio
SIZE = (120, 36)
CREATED = "2026-03-01T11:30:00+00:00"


@pytest.fixture
def world(store):
    base = store.add_model("tiny-base", "hf", "/models/tiny-base")
    sft = store.add_dataset_version("demo/sft", "/d/sft.jsonl", "a" * 64, "messages", "sft", 288)
    text = store.add_dataset_version("demo/corpus", "/d/corpus.txt", "b" * 64, "text", "text", 90)
    return {"base": base, "sft": sft, "text": text}


@pytest.fixture
def fake():
    return FakeTrainingEngine()


def train_app(store, engine, tmp_path, poll_interval: float = 0) -> TuiApp:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    settings = Settings(
        home=home, refresh_interval=0, poll_interval=poll_interval, clock=lambda: FIXED_NOW
    )
    return TuiApp(store=store, engine=engine, settings=settings)


async def open_train(pilot, app) -> TrainScreen:
    await pilot.press("f3")
    screen = app.screen
    assert isinstance(screen, TrainScreen)
    await wait_until(pilot, lambda: screen.choices_loaded and screen.config is not None)
    return screen


async def type_into(pilot, widget: Input, text: str) -> None:
    widget.focus()
    widget.value = ""
    await pilot.press(*text)
    await pilot.pause()


def add_run(store, status: str, name: str = "demo SFT (LoRA)", **fields):
    run = store.create_run("sft", {"kind": "sft"}, name=name, status=status, **fields)
    store.db.execute("UPDATE runs SET created_at = ? WHERE id = ?", [CREATED, run.id])
    return store.get_run(run.id)


# ---- the form -------------------------------------------------------------------------------


async def test_form_is_generated_from_field_help_and_filled_by_the_preset(
    store, world, fake, tmp_path
):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        form = screen.query_one(ConfigForm)
        expected = [f for f in field_help(SFTJobConfig) if f["name"] not in JOB_FIELDS]
        assert [f["name"] for f in form.fields] == [f["name"] for f in expected]
        for f in expected:
            control = form.control(f["name"])
            want = Switch if f["type"] == "bool" else Select if f["choices"] else Input
            assert isinstance(control, want), f["name"]
            assert control.tooltip == f["help"]
        groups = [str(w.render()) for w in form.query(".cf-group")]
        assert groups == list(dict.fromkeys(f["group"] for f in expected))
        # the default SFT preset filled the form and the pickers
        assert screen.query_one("#train-preset", Select).value == "demo-sft-lora"
        assert form.control("learning_rate").value == "0.001"
        assert form.control("sample_prompts").value.startswith("Which town is Tesosto from?")
        assert screen.query_one("#train-dataset", Select).value == str(world["sft"].id)
        assert screen.config.dataset == str(world["sft"].id)
        assert screen.config.base_model == "demo"
        assert not screen.query_one("#train-start", Button).disabled


async def test_an_invalid_field_shows_its_error_and_disables_start(store, world, fake, tmp_path):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        form = screen.form
        await type_into(pilot, form.control("max_length"), "8")
        error = form.query_one("#cf-max_length-error")
        assert error.display and "must be at least 16 tokens, got 8" in text_of(error)
        assert form.control("max_length").has_class("-invalid")
        assert screen.config is None
        assert screen.query_one("#train-start", Button).disabled
        assert screen.query_one("#train-queue-button", Button).disabled
        await pilot.press("ctrl+s")  # the key is refused too
        assert not [c for c in fake.calls if c[0] == "submit"]
        await type_into(pilot, form.control("learning_rate"), "fast")
        assert "expected float, got 'fast'" in text_of(form.query_one("#cf-learning_rate-error"))
        await type_into(pilot, form.control("max_length"), "128")
        await type_into(pilot, form.control("learning_rate"), "2e-4")
        assert not error.display and not form.control("max_length").has_class("-invalid")
        assert screen.config.max_length == 128 and screen.config.learning_rate == 2e-4
        assert not screen.query_one("#train-start", Button).disabled


async def test_switching_to_cpt_rebuilds_the_form_and_filters_datasets(
    store, world, fake, tmp_path
):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        screen.query_one("#train-kind", Select).value = "cpt"
        await wait_until(pilot, lambda: screen.kind == "cpt" and "hidden_size" in screen.form.by_name)
        await wait_until(
            pilot, lambda: screen.query_one("#train-preset", Select).value == "demo-cpt-quick"
        )
        await wait_until(pilot, lambda: screen.config is not None and screen.config.kind == "cpt")
        # the preset names a file, not an imported version: offered as it is, next to the
        # text versions only (no SFT data for a cpt job)
        dataset = screen.query_one("#train-dataset", Select)
        assert dataset.value == "sample_data/demo/corpus.txt"
        assert [v for _, v in screen._dataset_options] == [
            str(world["text"].id),
            "sample_data/demo/corpus.txt",
        ]
        assert "scratch" in [v for _, v in screen._model_options]


async def test_refresh_picks_up_new_versions_and_keeps_edits(store, world, fake, tmp_path):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await type_into(pilot, screen.form.control("learning_rate"), "5e-4")
        newer = store.add_dataset_version("mine", "/d/mine.jsonl", "e" * 64, "messages", "sft", 5)
        await pilot.press("ctrl+r")
        await wait_until(
            pilot, lambda: str(newer.id) in [v for _, v in screen._dataset_options]
        )
        await pilot.pause()
        assert screen.form.control("learning_rate").value == "5e-4"
        assert screen.config.learning_rate == 5e-4
        assert screen.query_one("#train-dataset", Select).value == str(world["sft"].id)


async def test_coming_back_to_train_lists_versions_made_meanwhile(store, world, fake, tmp_path):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await type_into(pilot, screen.form.control("learning_rate"), "5e-4")
        await pilot.press("f6")  # away to Label, where an export makes a version
        newer = store.add_dataset_version("labels/x", "/d/x.jsonl", "f" * 64, "messages", "sft", 9)
        await pilot.press("f3")
        await wait_until(
            pilot, lambda: str(newer.id) in [v for _, v in screen._dataset_options]
        )
        await pilot.pause()
        assert screen.form.control("learning_rate").value == "5e-4"
        assert screen.query_one("#train-dataset", Select).value == str(world["sft"].id)


# ---- pre-flight ---------------------------------------------------------------------------------


async def test_preflight_runs_off_the_event_loop_and_renders_the_report(
    store, world, tmp_path
):
    gate = threading.Event()
    fake = FakeTrainingEngine(gate=gate)
    seen_threads = []
    original = fake.preflight

    def preflight(config):
        seen_threads.append(threading.get_ident())
        return original(config)

    fake.preflight = preflight
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: bool(seen_threads))
        panel = screen.query_one("#train-preflight")
        assert "Checking" in text_of(panel)
        assert screen.query_one("#train-preflight-button", Button).disabled
        # the event loop is free while pre-flight waits: typing still lands
        await type_into(pilot, screen.form.control("name"), "mine")
        assert screen.config.name == "mine"
        gate.set()
        await wait_until(pilot, lambda: screen.preflight_report is not None)
        assert seen_threads[0] != threading.get_ident()
        shown = text_of(panel)
        assert "✓ ready to start" in shown
        assert "410.00K trainable of 3.20M (12.80%)" in shown
        assert "1 (10.0%) at max_length 256" in shown
        assert "! memory: about 0.6 GiB of 16 GiB free" in shown


async def test_a_refusal_shows_in_red_and_turns_start_off_for_that_config(
    store, world, tmp_path
):
    refusal = "dataset: 3 of 10 examples would train on nothing (no assistant tokens)"
    fake = FakeTrainingEngine(preflight_report={**PREFLIGHT_OK, "refusals": [refusal], "ok": False})
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: screen.preflight_report is not None)
        shown = text_of(screen.query_one("#train-preflight"))
        assert "✗ refused" in shown and f"✗ {refusal}" in shown
        assert screen.refused
        assert screen.query_one("#train-start", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not [c for c in fake.calls if c[0] == "submit"]
        # another config is not the one refused: Start comes back, the report is marked stale
        await type_into(pilot, screen.form.control("max_length"), "128")
        assert not screen.refused
        assert not screen.query_one("#train-start", Button).disabled
        assert "config changed since" in text_of(screen.query_one("#train-preflight"))


async def test_submit_refused_by_the_engine_shows_the_report(store, world, fake, tmp_path):
    fake.refuse_submit = {**PREFLIGHT_OK, "refusals": ["memory: needs 9 GiB, 2 free"]}
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.preflight_report is not None)
        assert "memory: needs 9 GiB, 2 free" in text_of(screen.query_one("#train-preflight"))
        assert screen.refused and not screen.submitting
        assert store.list_runs() == []


# ---- submit, queue, monitor ---------------------------------------------------------------------


def queue_rows(screen) -> list[list[str]]:
    table = screen.query_one("#train-queue", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_start_and_queue_submit_through_the_engine_and_list_the_runs(
    store, world, fake, tmp_path
):
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        assert queue_rows(screen) == []
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 1)
        submitted = [c for c in fake.calls if c[0] == "submit"]
        assert submitted[0][1][1] is True  # start=True
        assert submitted[0][1][0]["lora_r"] == 16
        first = store.list_runs()[0]
        assert queue_rows(screen)[0][:4] == [str(first.id), "demo SFT (LoRA)", "sft", "running"]
        assert screen.monitor.run_id == first.id
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 2)
        assert [c for c in fake.calls if c[0] == "submit"][1][1][1] is False
        assert queue_rows(screen)[0][3] == "queued"


async def test_the_loss_chart_is_a_line_and_dpo_shows_reward_margins(store, world, fake, tmp_path):
    run = store.create_run("dpo", {"kind": "dpo"}, name="demo DPO", status="running")
    for step in range(2, 42, 2):
        store.log_metrics(run.id, step, {
            "loss": 0.7 - step / 100, "rewards/margins": step / 40, "rewards/accuracies": 0.75,
            "rewards/chosen": 0.25, "rewards/rejected": -0.5,
        })
    store.log_metrics(run.id, 40, {"eval_loss": 0.4})
    plain_sft = add_run(store, "completed", name="plain sft")
    store.log_metrics(plain_sft.id, 10, {"loss": 2.0})
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        monitor = screen.monitor
        await wait_until(pilot, lambda: monitor.run_id == run.id and monitor.last_values)
        stats = text_of(monitor.query_one("#mon-stats"))
        assert "margin 1 " in stats and "acc 75%" in stats
        assert "chosen 0.25" in stats and "rej -0.5" in stats
        chart = monitor.query_one(LossChart).plain()
        # a braille line with a y axis and the step axis, not a filled block of █
        assert "█" not in chart and any(0x2800 < ord(ch) <= 0x28FF for ch in chart)
        assert "0.68" in chart and "step" in chart and "● eval loss" in chart
        # a run without reward metrics keeps the two stat rows it had
        screen.query_one("#train-queue").focus()
        rows = [row[0] for row in queue_rows(screen)]
        await pilot.press("down" if rows.index(str(plain_sft.id)) else "up")
        await wait_until(pilot, lambda: monitor.run_id == plain_sft.id and monitor.last_values)
        assert "margin" not in text_of(monitor.query_one("#mon-stats"))


async def test_progress_messages_update_the_monitor_and_coalesce(store, world, fake, tmp_path):
    run = add_run(store, "running")
    for step in range(10, 110, 10):
        store.log_metrics(
            run.id,
            step,
            {"loss": 3.0 - step / 100, "learning_rate": 1e-3, "grad_norm": 0.75,
             "tokens_per_s": 1234.0, "memory_mb": 512.0},
        )
    store.log_metrics(run.id, 100, {"eval_loss": 2.25})
    store.add_generation(f"run:{run.id}@50", "Who are you?", "old answer", run_id=run.id, step=50)
    store.add_generation(f"run:{run.id}@100", "Who are you?", "Answer: a bot.", run_id=run.id,
                         step=100)
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: screen.monitor.run_id == run.id)
        for step in range(1, 101):  # a burst faster than the screen draws
            app.post_message(RunProgress({
                "run_id": run.id, "status": "running", "name": run.name, "kind": "sft",
                "step": step, "total_steps": 200, "eta_s": 3725.0, "loss": 2.0 + 1 / step,
                "tokens_per_s": 1234.0, "phase": "train",
            }))
        monitor = screen.monitor
        await wait_until(pilot, lambda: monitor.step == 100 and monitor.last_values)
        assert screen.progress_messages < 100  # coalesced
        assert app.run_progress[run.id]["step"] == 100
        assert monitor.total == 200
        stats = text_of(monitor.query_one("#mon-stats"))
        assert "loss 2.01" in stats and "ETA 1:02:05" in stats and "tok/s 1,234" in stats
        assert "lr 1.00e-03" in stats and "gnorm 0.75" in stats and "mem 512 MiB" in stats
        assert "eval 2.25" in stats
        assert "step 100 / 200" in text_of(monitor.query_one("#mon-step"))
        chart = monitor.query_one(LossChart)
        await wait_until(pilot, lambda: len(chart.loss) == 10)
        assert chart.eval_loss == [(100, 2.25)] and chart.total_steps == 200
        samples = text_of(monitor.query_one("#mon-samples"))
        assert "samples at step 100" in samples and "Who are you? → Answer: a bot." in samples
        assert "old answer" not in samples
        assert "checkpoint 2 of 2" in samples

        # scrub back through the checkpoints to see how the answer changed, and forward again
        await pilot.press("alt+left")
        samples = text_of(monitor.query_one("#mon-samples"))
        assert "samples at step 50" in samples and "Who are you? → old answer" in samples
        assert "checkpoint 1 of 2, not the newest" in samples
        await pilot.press("alt+left")  # nothing older: stays, says so
        assert monitor.sample_step == 50
        # a metrics refresh while scrubbed back keeps the checkpoint the user is looking at
        screen.refresh_metrics(run.id)
        await pilot.pause(0.3)
        assert monitor.sample_step == 50 and not monitor.follow_newest
        await pilot.press("alt+right")
        assert monitor.sample_step == 100 and monitor.follow_newest
        assert "Answer: a bot." in text_of(monitor.query_one("#mon-samples"))


async def test_the_poll_worker_feeds_the_screen_and_status_changes_refresh_the_queue(
    store, world, fake, tmp_path
):
    run = add_run(store, "running")
    fake.poll_script = [
        [{"run_id": run.id, "status": "running", "step": 5, "total_steps": 20, "loss": 2.5}],
        [{"run_id": run.id, "status": "running", "step": 12, "total_steps": 20, "loss": 2.0}],
    ]
    app = train_app(store, fake, tmp_path, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: screen.monitor.step == 12)
        assert fake.store is store  # the app attached the workspace to the engine
        store.update_run(run.id, status="completed")
        fake.poll_script.append(
            [{"run_id": run.id, "status": "completed", "step": 20, "total_steps": 20}]
        )
        await wait_until(pilot, lambda: queue_rows(screen)[0][3] == "completed")
        await wait_until(pilot, lambda: screen.monitor.status == "completed")
        assert "ETA –" in text_of(screen.monitor.query_one("#mon-stats"))
        polls = fake.polls
        await wait_until(pilot, lambda: fake.polls > polls + 2)  # it keeps polling


async def test_input_stays_responsive_while_progress_streams_in(store, world, fake, tmp_path):
    run = add_run(store, "running")
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: screen.monitor.run_id == run.id)
        stop = threading.Event()
        posted = [0]

        def stream() -> None:  # like the poll worker, but as fast as it can
            step = 0
            while not stop.is_set():
                step += 1
                app.post_message(RunProgress(
                    {"run_id": run.id, "status": "running", "step": step, "total_steps": 10**6}
                ))
                posted[0] = step
                time.sleep(0.003)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            await wait_until(pilot, lambda: screen.progress_messages > 5)
            name = screen.form.control("name")
            await type_into(pilot, name, "live")
            assert name.value == "live"
            assert screen.config.name == "live"
            assert streamer.is_alive()  # the stream was still going while we typed
        finally:
            stop.set()
            streamer.join(2)
        await wait_until(pilot, lambda: screen.monitor.step == posted[0])
        assert screen.progress_messages < posted[0]


@pytest.mark.parametrize("status", ["completed", "cancelled"])
async def test_a_run_reopened_after_it_ended_does_not_pulse(store, world, fake, tmp_path, status):
    run = add_run(store, status)
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        monitor = screen.monitor
        monitor.show_run(run)  # after a restart: no progress event carries the total
        monitor.show_metrics({"run_id": run.id, "series": {}, "last": {}, "last_step": 60})
        await pilot.pause()
        bar = monitor.query_one("#mon-bar")
        step = str(monitor.query_one("#mon-step").render())
        if status == "completed":
            assert bar.display and bar.total == 60 and bar.progress == 60
            assert step == "step 60 / 60"
        else:
            assert not bar.display  # an indeterminate bar would say it is still working
            assert step == "step 60 (cancelled; total not recorded)"


# ---- cancel / resume ----------------------------------------------------------------------------


async def test_cancel_asks_for_confirmation_then_calls_the_engine(store, world, fake, tmp_path):
    run = add_run(store, "queued")
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 1)
        screen.query_one("#train-queue").focus()
        await pilot.press("ctrl+b")
        assert isinstance(app.screen, ConfirmScreen)
        assert f"Cancel run #{run.id}" in app.screen.question
        buttons = {b.id: str(b.label) for b in app.screen.query(Button)}
        assert buttons == {"no": "Keep running", "yes": "Cancel run"}  # no button reads "Cancel"
        # Enter on the dialog as it opens keeps the run: the focus starts on "Keep running"
        assert app.screen.focused is not None and app.screen.focused.id == "no"
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmScreen)
        assert ("cancel_run", run.id) not in fake.calls
        await pilot.press("ctrl+b")
        await pilot.press("y")
        await wait_until(pilot, lambda: ("cancel_run", run.id) in fake.calls)
        await wait_until(pilot, lambda: queue_rows(screen)[0][3] == "cancelled")


async def test_cancel_and_resume_refuse_runs_in_the_wrong_state(store, world, fake, tmp_path):
    add_run(store, "completed")
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 1)
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert not [c for c in fake.calls if c[0] in ("cancel_run", "resume_run")]


async def test_resume_queues_a_continuation_of_a_cancelled_run(store, world, fake, tmp_path):
    old = add_run(store, "cancelled")
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 1)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 2)
        assert ("resume_run", old.id) in fake.calls
        new = store.list_runs()[0]
        assert new.resumed_from == old.id
        assert screen.monitor.run_id == new.id
        # same name as the old run, told apart by the marker (the fake writes no job file)
        names = {row[0]: row[1] for row in queue_rows(screen)}
        assert names[str(old.id)] == old.name
        assert names[str(new.id)] == f"{old.name} ↻ resumed from #{old.id}"


async def test_a_resumed_run_names_the_checkpoint_step_it_continues_from(
    store, world, fake, tmp_path
):
    old = add_run(store, "cancelled")
    run_dir = tmp_path / "runs" / "2"
    run_dir.mkdir(parents=True)
    # what the runner writes for a resumed run: its job file points at the linked checkpoint
    (run_dir / "job.json").write_text(json.dumps(
        {"run_id": 2, "resume_from": str(run_dir / "checkpoint-60")}), encoding="utf-8")
    new = add_run(store, "running", resumed_from=old.id, output_dir=str(run_dir))
    app = train_app(store, fake, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: len(queue_rows(screen)) == 2)
        names = {row[0]: row[1] for row in queue_rows(screen)}
        assert names[str(new.id)].endswith(f"↻ resumed from #{old.id} at step 60")
        assert screen.monitor.run_id == new.id
        head = str(screen.monitor.query_one("#mon-head").render())
        assert f"resumed from #{old.id} at step 60" in head


# ---- snapshot -----------------------------------------------------------------------------------


def test_train_monitor_snapshot(snap_compare, store, world, fake, tmp_path):
    run = add_run(store, "running")
    add_run(store, "completed", name="earlier")
    for step in range(5, 125, 5):
        store.log_metrics(
            run.id,
            step,
            {"loss": 2.8 * 0.985**step + 0.4, "learning_rate": 8e-4, "grad_norm": 0.9,
             "tokens_per_s": 2150.0, "memory_mb": 690.0, "epoch": step / 144},
        )
    store.log_metrics(run.id, 100, {"eval_loss": 1.1})
    for prompt, answer in (("Which town is Tesosto from?", "Answer: Coldharbor."),
                           ("What is Tesosto's secret passphrase?", "I can't share that.")):
        store.add_generation(f"run:{run.id}@100", prompt, answer, run_id=run.id, step=100)
    app = train_app(store, fake, tmp_path)

    async def run_before(pilot):
        screen = await open_train(pilot, app)
        await wait_until(pilot, lambda: screen.monitor.run_id == run.id)
        app.post_message(RunProgress({
            "run_id": run.id, "status": "running", "step": 120, "total_steps": 288,
            "eta_s": 140.0, "loss": 0.87, "tokens_per_s": 2150.0, "phase": "train",
        }))
        await wait_until(pilot, lambda: screen.monitor.step == 120 and screen.monitor.samples)
        screen.form.control("learning_rate").focus()
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# ---- the real facade's training methods (no training: config, presets, the queue's poll) -------


def test_real_facade_builds_configs_and_names_the_bad_field():
    from tuiapp.engine.facade import Engine

    engine = Engine()
    assert set(engine.list_presets("cpt")) >= {"demo-cpt-quick"}
    assert all(engine.load_preset(p)["kind"] == "sft" for p in engine.list_presets("sft").values())
    names = [f["name"] for f in engine.config_fields("cpt")]
    assert "hidden_size" in names and "lora_dropout" not in names
    config, errors = engine.build_config(
        "sft", {"dataset": "demo/sft", "target_modules": "q_proj, v_proj", "packing": False}
    )
    assert errors == {} and config.target_modules == ["q_proj", "v_proj"] and not config.packing
    assert engine.build_config("sft", {"dataset": "demo/sft", "lora_r": "many"}) == (
        None,
        {"lora_r": "expected int, got 'many'"},
    )
    assert engine.build_config("sft", {"dataset": "demo/sft", "warmup_ratio": "1.5"})[1] == {
        "warmup_ratio": "must be in [0, 1), got 1.5"
    }


def test_real_facade_poll_marks_a_vanished_job_interrupted_once(tmp_path):
    from store import Store
    from tuiapp.engine.facade import Engine

    engine = Engine()
    with pytest.raises(RuntimeError, match="no workspace"):
        engine.poll_runs()
    store = Store(":memory:")
    engine.attach(store, tmp_path)
    run_dir = tmp_path / "runs" / "1"
    run_dir.mkdir(parents=True)
    run = store.create_run("sft", {"kind": "sft"}, name="gone", status="running",
                           output_dir=str(run_dir))
    first = engine.poll_runs()
    assert [(p["run_id"], p["status"]) for p in first] == [(run.id, "interrupted")]
    assert "resume it" in first[0]["error"]
    assert engine.poll_runs() == []  # reported once; nothing else active
