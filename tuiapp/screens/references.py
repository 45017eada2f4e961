"""Reference answers of held-out prompts, shown next to the models' answers in Compare's Side by
side and in Label, so a person judges against what the answer should be.

The answers are not stored with a generation or a label task; they live in the prompt sets the
prompts came from. So the index is by prompt text, built from the prompt-set dataset versions
(kind "prompt": rows with "prompt" and "reference"), the demo's held-out questions, and any prompt
file the user named (the New label tasks dialog). SFT versions are left out on purpose: their
"reference" is the training answer, not a held-out one. Reads files: call from a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text

from tuiapp import paths

HELDOUT_FILES = (paths.DEMO_DIR / "eval_heldout.jsonl",)
MAX_ROWS = 20_000  # a prompt set larger than this is not read for references (it would stall)


def _prompt_text(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # a message list: the last user turn is what is shown
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else None
    return None


def references_of(spec: str | Path, store: Any = None) -> dict[str, str]:
    """prompt → reference for one prompt set (a JSONL path or a dataset version id/name);
    empty when it cannot be read or has no references."""
    from tuiapp.engine.infer.evaluate import load_prompt_set

    try:
        records = load_prompt_set(spec, store).records
    except Exception:  # an unreadable set simply has no references to show
        return {}
    out: dict[str, str] = {}
    for rec in records[:MAX_ROWS]:
        prompt, reference = _prompt_text(rec.get("prompt")), rec.get("reference")
        if prompt and isinstance(reference, str) and reference.strip():
            out.setdefault(prompt.strip(), reference.strip())
    return out


def reference_index(store: Any) -> dict[str, str]:
    """prompt → reference from every prompt-set version in the store and the demo's held-out set
    (the newest version wins when two disagree)."""
    index: dict[str, str] = {}
    for path in HELDOUT_FILES:
        if path.is_file():
            index.update(references_of(path))
    for version in store.list_dataset_versions():  # oldest first
        if version.kind == "prompt" and (version.rows or 0) <= MAX_ROWS:
            index.update(references_of(str(version.id), store))
    return index


def reference_for(index: dict[str, str], prompt: str | None) -> str | None:
    return index.get(prompt.strip()) if prompt else None


def reference_line(reference: str) -> Text:
    """How a reference reads under a prompt: labelled, so it is never taken for a model's answer."""
    text = Text()
    text.append("reference: ", style="bold green")
    text.append(reference)
    return text


def reference_under(index: dict[str, str], prompt: str | None) -> Text:
    """A new line with the prompt's reference, or nothing when it has none."""
    reference = reference_for(index, prompt)
    return Text("\n").append_text(reference_line(reference)) if reference else Text()
