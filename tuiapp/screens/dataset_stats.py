"""Turn the dataset layer's stats dict into a table and histogram bins for the Stats tab.

Pure functions (no widgets) so they are easy to test; the stats dict is JSON from
`engine.stats` (see docs/interfaces.md) and may grow keys, so unknown keys are shown as-is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

# Keys holding histogram data rather than numbers a person reads in the table.
HISTOGRAM_KEYS = ("histogram", "token_histogram", "length_histogram")
LENGTH_KEYS = ("lengths", "token_lengths")
NUMBER_OF_BINS = 12


SHARE_WORDS = ("share", "fraction", "ratio", "rate", "pct")


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if any(word in key for word in SHARE_WORDS) and 0 <= value <= 1:
            return f"{value:.1%}"
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        if not value:
            return "none"
        # [[12, 3], ...] are pairs of line numbers (e.g. a duplicate and its first copy)
        items = ["=".join(map(str, v)) if isinstance(v, list) else _fmt(v) for v in value[:6]]
        return ", ".join(items) + (f" … ({len(value)})" if len(value) > 6 else "")
    return str(value)


def _label(key: str) -> str:
    return key.replace("_", " ")


def stats_table(stats: dict) -> Table:
    """Two columns, one row per number; a nested dict becomes indented rows under its name."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0), expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", overflow="fold")
    for key, value in stats.items():
        if key in HISTOGRAM_KEYS or key in LENGTH_KEYS:
            continue
        if isinstance(value, dict):
            table.add_row(_label(key), "")
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, dict):
                    sub_value = "  ".join(f"{k} {_fmt(v, k)}" for k, v in sub_value.items())
                table.add_row(f"  {_label(str(sub_key))}", _fmt(sub_value, f"{key}.{sub_key}"))
        else:
            table.add_row(_label(key), _fmt(value, key))
    return table


def _bins_from_lengths(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(low, high, count) with ~NUMBER_OF_BINS round-width bins covering every length."""
    if not lengths:
        return []
    top = max(lengths)
    raw_width = max(1, math.ceil((top + 1) / NUMBER_OF_BINS))
    magnitude = 10 ** (len(str(raw_width)) - 1)
    width = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_width)
    counts: dict[int, int] = {}
    for length in lengths:
        counts[length // width] = counts.get(length // width, 0) + 1
    return [(b * width, (b + 1) * width - 1, counts.get(b, 0)) for b in range(top // width + 1)]


def _bins_from_histogram(hist: Any) -> list[tuple[int, int, int]]:
    if isinstance(hist, dict):
        edges = hist.get("edges") or hist.get("bin_edges") or hist.get("bins")
        counts = hist.get("counts")
        if edges is not None and counts is not None:
            if len(edges) == len(counts) + 1:
                return [(edges[i], edges[i + 1] - 1, c) for i, c in enumerate(counts)]
            return [(edges[i], edges[i], c) for i, c in enumerate(counts)]
        return []
    bins = []
    for item in hist or []:
        if isinstance(item, dict):
            low = item.get("lo", item.get("low", item.get("start", 0)))
            high = item.get("hi", item.get("high", item.get("end", low)))
            bins.append((low, high, item.get("count", 0)))
        elif isinstance(item, list | tuple) and len(item) == 3:
            bins.append(tuple(item))
    return bins


def histogram_bins(stats: dict, max_length: int | None) -> list[tuple[str, int, bool]]:
    """(label, count, over max_length?) for the Histogram widget, from whatever form the
    stats carry: explicit bins, or the raw per-row token lengths."""
    bins: list[tuple[int, int, int]] = []
    for key in HISTOGRAM_KEYS:
        if stats.get(key):
            bins = _bins_from_histogram(stats[key])
            break
    else:
        for key in LENGTH_KEYS:
            if stats.get(key):
                bins = _bins_from_lengths(list(stats[key]))
                break
    return [
        (
            f"{int(low)}" if low == high else f"{int(low)}–{int(high)}",
            int(count),
            max_length is not None and high >= max_length,
        )
        for low, high, count in bins
    ]


def file_label(short: str, version_name: str | None) -> Text:
    """A file in Datasets' list under the name Train's dataset list gives its version (an exported
    labels file `labels-demo-….jsonl` reads `labels/demo` in both), the file after it, dim; a
    file whose path already is its name (`demo/sft.jsonl`) or not imported reads as its path."""
    if not version_name or str(Path(short).with_suffix("")) == version_name:
        return Text(short)
    return Text.assemble(version_name, (f" · {Path(short).name}", "dim"))
