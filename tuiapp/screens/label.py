"""Label: pairwise preference labelling. Shows the labels and tasks the store already holds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tuiapp.screens.overview import OverviewScreen, Section

CHOICES = ("a", "b", "tie", "both_bad", "skip")


class LabelScreen(OverviewScreen):
    AREA = "label"
    AREA_TITLE = "Label"
    PURPOSE = (
        "Label will show two answers to one prompt (sides shuffled) and take one key per "
        "judgement — a, b, tie, both bad, skip, undo — each committed to the store as it is "
        "pressed; the labels then become a new preference dataset version for DPO or a reward "
        "model. Making label tasks needs the generation backends, which are not part of this "
        "build yet. What the store holds now:"
    )
    COMMANDS = (
        ("tuneloop labels new --models A,B --prompts FILE", "make label tasks from two models"),
        ("tuneloop labels export NAME", "labels → an immutable preference dataset version"),
        ("tuneloop labels stats", "counts, agreement and win-rates"),
    )
    SECTIONS = (
        Section("label-choices", "Live labels by choice", ("choice", "labels"), "No labels yet."),
    )

    def collect(self, store: Any):
        labels = store.live_labels()
        by_choice = Counter(label.choice for label in labels)
        facts = {"live labels": str(len(labels))}
        list_tasks = getattr(store, "list_label_tasks", None)
        if list_tasks is not None:
            facts["label tasks"] = str(len(list_tasks()))
        rows = [(choice, by_choice[choice]) for choice in CHOICES if by_choice[choice]]
        return {"label-choices": rows}, facts
