"""What a row's columns mean: which formats its keys allow, which columns go unused, and the
multimodal rows tuneloop refuses (training on images or audio is not in scope).
"""

from __future__ import annotations

from typing import Any

from tuiapp.engine.data.read import describe
from tuiapp.engine.data.types import FORMAT_KIND

# Columns that hold images, audio or video: LLaMA-Factory's `images`/`audios`/`videos`, HF's
# `image`/`audio`.
MEDIA_COLUMNS = ("images", "image", "audio", "audios", "videos", "video")
MEDIA_PART_TYPES = ("image", "image_url", "input_image", "audio", "input_audio", "video",
                    "video_url")
# Columns tuneloop's own label export writes next to a pair; read by later steps, never unused.
TUNELOOP_COLUMNS = {"both_bad", "edited", "chosen_model", "rejected_model", "task_id",
                    "label_event_id"}
# The columns each format reads. prompt_only is left out: a prompt set's other columns
# (reference, regex, ...) travel with the prompt to the scorers.
USED = {
    "messages": {"messages", "tools", "system"},
    "sharegpt": {"conversations", "tools", "system"},
    "alpaca": {"instruction", "input", "output", "system"},
    "prompt_completion": {"prompt", "completion"},
    "kto": {"prompt", "completion", "label"},
    "kto_messages": {"messages", "conversations", "label", "tools", "system"},
    "text": {"text"},
    "preference": {"prompt", "chosen", "rejected", "instruction", "input", "system"},
    "preference_messages": {"prompt", "chosen", "rejected", "tools"},
    "sharegpt_preference": {"conversations", "messages", "chosen", "rejected", "tools",
                            "system"},
    "preference_message_pairs": {"prompt", "chosen_messages", "rejected_messages", "tools"},
}


def candidates(row: dict[str, Any]) -> list[str]:
    """Formats the row's keys allow, most likely first."""
    keys = set(row)
    conv = bool(keys & {"messages", "conversations"})
    out: list[str] = []
    if keys & {"chosen_messages", "rejected_messages"}:
        out.append("preference_message_pairs")
    if conv and keys & {"chosen", "rejected"}:
        out.append("sharegpt_preference")
    if conv and "label" in keys:
        out.append("kto_messages")
    if "messages" in keys:
        out.append("messages")
    if "conversations" in keys:
        out.append("sharegpt")
    if conv and "kto_messages" not in out:
        out.append("kto_messages")  # only taken when kto is asked for: then "missing 'label'"
    if "chosen" in keys or "rejected" in keys:
        sample = row.get("chosen", row.get("rejected"))
        out.append("preference_messages" if isinstance(sample, list) else "preference")
    if "instruction" in keys or {"input", "output"} <= keys:
        out.append("alpaca")
    if "label" in keys and keys & {"prompt", "completion"}:
        out.append("kto")
    if "completion" in keys:
        out.append("prompt_completion")
    if "prompt" in keys:
        out.append("prompt_only")
    if "text" in keys:
        out.append("text")
    return out


def detect_format(row: dict[str, Any], kind: str | None = None) -> str | None:
    """The format a row is written in (None: no format fits). An asked kind wins when the
    row's keys can be read as that kind."""
    found = candidates(row)
    if kind:
        for fmt in found:
            if FORMAT_KIND[fmt] == kind:
                return fmt
    return found[0] if found else None


def media_problem(row: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) when the row carries images, audio or video."""
    for col in MEDIA_COLUMNS:
        value = row.get(col)
        if value not in (None, "", [], {}):
            return col, (f"multimodal rows are not supported: this row has {describe(value)} in "
                         f"{col!r} and tuneloop trains text-only models; drop the column (and any "
                         "<image>/<audio> placeholders) or leave such rows out")
    return None


def unused(fmt: str, row: dict[str, Any]) -> list[str]:
    """Columns of the row the format does not read."""
    used = USED.get(fmt)
    if used is None:
        return []
    return [k for k in row if k not in used and k not in TUNELOOP_COLUMNS]
