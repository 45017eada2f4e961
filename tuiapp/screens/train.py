"""Train: the dataset versions and models a run can start from, and the command that starts it."""

from __future__ import annotations

from typing import Any

from tuiapp.screens.overview import OverviewScreen, Section
from tuiapp.screens.run_rows import short_time


class TrainScreen(OverviewScreen):
    AREA = "train"
    AREA_TITLE = "Train"
    PURPOSE = (
        "Train will configure and launch jobs — SFT (full, LoRA, QLoRA), continued pre-training, "
        "DPO/KTO, reward models, PPO/GRPO/RLOO — in a child process, with live loss, cancel and "
        "resume. The training engine is not part of this build yet: the command below says so "
        "and runs nothing. What a run can start from is already in the store:"
    )
    COMMANDS = (
        ("tuneloop train sft --config CONFIG.toml", "supervised fine-tuning from a config file"),
        ("tuneloop train dpo --config CONFIG.toml", "preference optimisation on a preference set"),
        ("tuneloop runs list", "runs recorded so far (also the Runs area, F4)"),
    )
    SECTIONS = (
        Section(
            "train-datasets",
            "Dataset versions",
            ("id", "name", "kind", "format", "rows", "source", "created"),
            "No dataset versions. Import one in the Datasets area (F2, then ^s).",
        ),
        Section(
            "train-models",
            "Models",
            ("id", "name", "kind", "path"),
            "No models registered. `tuneloop demo build-base` builds the tiny demo base "
            "model, which the workspace then registers.",
        ),
    )

    def collect(self, store: Any):
        versions = store.list_dataset_versions()
        models = store.list_models()
        return (
            {
                "train-datasets": [
                    (
                        v.id,
                        v.name,
                        v.kind,
                        v.format,
                        v.rows,
                        v.source or "",
                        short_time(getattr(v, "created_at", None)),
                    )
                    for v in versions
                ],
                "train-models": [(m.id, m.name, m.kind, m.path) for m in models],
            },
            {
                "dataset versions": str(len(versions)),
                "models": str(len(models)),
                "runs": str(len(store.list_runs())),
            },
        )
