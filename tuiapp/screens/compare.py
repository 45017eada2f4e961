"""Compare: models side by side on one prompt. Shows the models and generations in the store."""

from __future__ import annotations

from typing import Any

from tuiapp.screens.overview import OverviewScreen, Section


def _short(text: Any, limit: int = 48) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class CompareScreen(OverviewScreen):
    AREA = "compare"
    AREA_TITLE = "Compare"
    PURPOSE = (
        "Compare will stream one prompt through the base model (adapter off), an SFT adapter and "
        "an aligned adapter on one loaded base — or a GGUF through llama.cpp — side by side, "
        "with latency and token counts, and batch-score prompt sets. The generation backends "
        "are not part of this build yet; the models they will load and every generation "
        "already recorded are listed here."
    )
    COMMANDS = (
        ("tuneloop generate MODEL --prompt TEXT", "one answer from a model, run id or GGUF"),
        ("tuneloop eval --models A,B --prompts FILE", "score a prompt set across models"),
    )
    SECTIONS = (
        Section(
            "compare-models",
            "Models that can be compared",
            ("id", "name", "kind", "base", "path"),
            "No models registered yet (`tuneloop demo build-base` builds the demo base).",
        ),
        Section(
            "compare-generations",
            "Recorded generations (newest 50)",
            ("model", "prompt", "output", "tokens", "latency s"),
            "No generations recorded yet.",
        ),
    )

    def collect(self, store: Any):
        models = store.list_models()
        generations = store.list_generations(limit=50)
        return (
            {
                "compare-models": [
                    (m.id, m.name, m.kind, m.base_model_id or "", m.path) for m in models
                ],
                "compare-generations": [
                    (
                        g.model_ref,
                        _short(g.prompt),
                        _short(g.output),
                        g.tokens or "",
                        f"{g.latency_s:.2f}" if g.latency_s is not None else "",
                    )
                    for g in generations
                ],
            },
            {"models": str(len(models)), "generations shown": str(len(generations))},
        )
