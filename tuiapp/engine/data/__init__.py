"""The dataset room: files practitioners bring, read and checked before anything trains.

    read.py      rows from JSON Lines / JSON / CSV / Parquet / text, with file and line
    formats.py   detecting a row shape and normalising it to TRL's conversational formats
    types.py     formats, kinds, problems and the validation report
    stats.py     token statistics, the histogram and examples through the chat template
    validate.py  validate(), content hashes and the valid-rows copy of --skip-invalid
    columns.py   what columns mean: detection, unused columns, multimodal rows
    turns.py     the checks formats share: fields, content, messages, conversations
    tools.py     tool calls and results normalised to the transformers chat format

The package re-exports the names the rest of tuneloop uses (``from tuiapp.engine import data``).

May import: nothing of tuneloop's but ``tuiapp.paths`` (and the demo tokenizer's folder, by path).
"""

from tuiapp.engine.data.stats import compute_stats, load_tokenizer, render_examples
from tuiapp.engine.data.types import FORMAT_KIND, FORMATS, KINDS, Problem, ValidationReport
from tuiapp.engine.data.validate import (
    content_hash,
    skip_summary,
    skippable,
    validate,
    write_valid_rows,
)

__all__ = [
    "FORMATS", "FORMAT_KIND", "KINDS", "Problem", "ValidationReport", "compute_stats",
    "content_hash", "load_tokenizer", "render_examples", "skip_summary", "skippable", "validate",
    "write_valid_rows",
]
