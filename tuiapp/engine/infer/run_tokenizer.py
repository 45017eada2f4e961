"""The chat template a run was trained with, for answering as that run (Compare, Label, eval).

One TransformersBackend serves the base and every run on it with the base's tokenizer. A run
trained with ``chat_template = "chatml"`` (or "llama3") on a base whose own template differs
learned to answer after ChatML's prompt, not the base's: rendering its prompts with the base's
template asks it something it never saw (other headers, a default system prompt it was not
trained with) and lets it run past the end of its turn. Every tuneloop run saves the tokenizer it
trained with beside its adapter (final/, checkpoints), template included, so that saved template
is the one to render with; its end-of-turn token joins the stop tokens.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunTemplate:
    template: str | None              # None: the base tokenizer's own template is the run's too
    stop_ids: frozenset[int] = frozenset()   # the run template's end-of-turn (and eos) ids


def saved_template(folder: str | Path) -> str | None:
    """The chat template a tokenizer saved in ``folder`` carries (chat_template.jinja, as
    transformers 5 writes it, or tokenizer_config.json's chat_template), else None."""
    folder = Path(folder)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") or None
    cfg = folder / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(value, list):  # named templates: the default one renders chats
        value = next((t.get("template") for t in value if t.get("name") == "default"), None)
    return value if isinstance(value, str) and value else None


def run_template(tokenizer, adapter_dir: str | Path) -> RunTemplate:
    """The template to render a run's prompts with, given the base backend's tokenizer."""
    from tuiapp.engine.train import template_mask

    template = saved_template(adapter_dir)
    if not template or template == getattr(tokenizer, "chat_template", None):
        return RunTemplate(None)
    probe = copy.copy(tokenizer)  # a shallow copy: the base tokenizer keeps its own template
    probe.chat_template = template
    return RunTemplate(template, frozenset(template_mask.end_of_turn_ids(probe)))
