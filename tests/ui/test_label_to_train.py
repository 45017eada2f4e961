"""Labels → a preference version → Train, without a shell: the Label screen's export (key x or
the command palette) offers "Train DPO / Train reward / Not now", and Train opens with that kind
and the new version picked (it wins over the dataset the kind's default preset names)."""

from __future__ import annotations

import pytest

from tuiapp.screens.label_export import TrainFromLabelsScreen
from tuiapp.screens.palette import TuneloopCommands
from tuiapp.screens.train import TrainScreen

from .conftest import wait_until
from .fakes import FakeLabelEngine
from .test_label import make_tasks, open_label, press_and_wait

pytestmark = pytest.mark.anyio


@pytest.fixture
def label_app(make_app):
    return lambda: make_app(engine=FakeLabelEngine())


async def label_and_export(pilot, app, screen, keys=("1", "2")):
    await press_and_wait(pilot, screen, *keys)
    await pilot.press("x")
    await wait_until(pilot, lambda: isinstance(app.screen, TrainFromLabelsScreen))
    return screen.last_export


async def train_shows(pilot, app, kind: str, version_id: int) -> TrainScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
    train = app.screen
    # the default preset of the kind applies after the lists load; the request must survive it
    await wait_until(pilot, lambda: train.preset_kind == kind and train.choices_loaded
                     and train.query_one("#train-preset").value is not None
                     and train.requested_dataset is None)
    for _ in range(3):
        await pilot.pause()
    assert train.query_one("#train-kind").value == kind
    assert train.kind == kind
    assert train.query_one("#train-dataset").value == str(version_id)
    assert train._dataset() == str(version_id)
    return train


async def test_export_then_d_opens_train_on_dpo_with_the_new_version(label_app, store, tmp_path):
    make_tasks(store, 3, swapped=lambda i: False)
    store.add_dataset_version("demo/preferences", "/x/prefs.jsonl", "ab" * 32, "preference",
                              "preference", 40, source="import")
    app = label_app()
    app.engine.home = tmp_path
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        v = await label_and_export(pilot, app, screen)
        assert v.kind == "preference" and v.rows == 2
        await pilot.press("d")
        train = await train_shows(pilot, app, "dpo", v.id)
        assert train.query_one("#train-preset").value == "demo-dpo"


async def test_palette_export_then_r_switches_an_open_train_screen_to_reward(label_app, store,
                                                                             tmp_path):
    make_tasks(store, 3, swapped=lambda i: False)
    app = label_app()
    app.engine.home = tmp_path
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f3")  # Train opened first, on its SFT default
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen)
                         and app.screen.preset_kind == "sft")
        assert app.screen.query_one("#train-kind").value == "sft"
        screen = await open_label(pilot, app)
        await press_and_wait(pilot, screen, "1", "2")
        hits = [hit async for hit in TuneloopCommands(screen).search("label: export as")]
        assert hits, "the export is in the command palette"
        app.call_later(hits[0].command)
        await wait_until(pilot, lambda: isinstance(app.screen, TrainFromLabelsScreen))
        await pilot.press("r")
        await train_shows(pilot, app, "reward", screen.last_export.id)


async def test_not_now_stays_on_label(label_app, store, tmp_path):
    make_tasks(store, 3, swapped=lambda i: False)
    app = label_app()
    app.engine.home = tmp_path
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        await label_and_export(pilot, app, screen)
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert app.current_mode == "label" and app.train_request is None


async def test_the_exported_labels_have_one_name_in_datasets_and_train(label_app, store, tmp_path):
    from textual.widgets import OptionList, Select

    make_tasks(store, 3, swapped=lambda i: False)
    app = label_app()
    app.engine.home = tmp_path
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_label(pilot, app)
        v = await label_and_export(pilot, app, screen)
        await pilot.press("d")
        train = await train_shows(pilot, app, "dpo", v.id)
        options = dict((value, str(label)) for label, value in train.query_one(
            "#train-dataset", Select)._options)
        assert options[str(v.id)].startswith(f"#{v.id} {v.name} ·")
        await pilot.press("f2")
        files = app.screen.query_one("#ds-files", OptionList)
        await wait_until(pilot, lambda: any(v.name in str(files.get_option_at_index(i).prompt)
                                            for i in range(files.option_count)))
        shown = [str(files.get_option_at_index(i).prompt) for i in range(files.option_count)]
        (entry,) = [s for s in shown if v.name in s]
        # Train's name first, the file it lives in after it (not only the hashed file name)
        assert entry.startswith(f"✓#{v.id} {v.name} · labels-") and entry.endswith(".jsonl")
