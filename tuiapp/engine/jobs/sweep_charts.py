"""The two figures of a sweep, as data and as standalone SVG files for a report.

* ``rank_series(rows)``: trainable parameters against LoRA rank, one line per method that has
  a rank (lora, qlora, dora …), points sorted by rank;
* ``method_groups(rows)``: per method, trainable parameters, peak memory and held-out score
  (the mean over that method's runs), the grouped bar chart of the method comparison.

``write_charts(rows, folder)`` draws both as SVG with nothing but string formatting (no plotting
library to install, identical bytes for identical data). The TUI draws the same data with
plotext. No Textual, no torch here.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

MEASURES = (("trainable_params", "trainable parameters"), ("peak_memory_mb", "peak memory (MiB)"),
            ("score", "held-out score"))
COLOURS = ("#5fafff", "#ffaf00", "#87d75f", "#ff5f5f", "#af87ff", "#5fd7d7")


def rank_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """{method: [(rank, trainable parameters), ...]} for runs with a rank and a count."""
    out: dict[str, dict[int, int]] = {}
    for r in rows:
        if r.get("lora_r") is None or r.get("trainable_params") is None:
            continue
        out.setdefault(str(r["method"]), {})[int(r["lora_r"])] = int(r["trainable_params"])
    return {m: sorted(points.items()) for m, points in out.items()}


def method_groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """{method label: {measure: mean over its runs or None}}, in the order methods first appear.
    A method swept over rank is one group per rank ("lora r8"), so the bars compare runs."""
    groups: dict[str, dict[str, list[float]]] = {}
    ranked = {m for m, pts in rank_series(rows).items() if len(pts) > 1}
    for r in rows:
        label = str(r.get("method") or "run")
        if label in ranked and r.get("lora_r") is not None:
            label = f"{label} r{r['lora_r']}"
        bucket = groups.setdefault(label, {key: [] for key, _ in MEASURES})
        for key, _ in MEASURES:
            if r.get(key) is not None:
                bucket[key].append(float(r[key]))
    return {label: {k: (sum(v) / len(v) if v else None) for k, v in measures.items()}
            for label, measures in groups.items()}


def human(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


# ------------------------------------------------------------------ SVG

_W, _H, _L, _R, _T, _B = 640, 360, 70, 20, 40, 60  # size and margins (left, right, top, bottom)


def _frame(title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
            f'<rect width="{_W}" height="{_H}" fill="#ffffff"/>',
            f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
            f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" stroke="#333"/>',
            f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" stroke="#333"/>']


def _y_ticks(top: float, fmt=human) -> list[str]:
    out = []
    for i in range(5):
        value = top * i / 4
        y = _H - _B - (_H - _T - _B) * i / 4
        out.append(f'<line x1="{_L - 4}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{_L - 8}" y="{y + 4:.1f}" text-anchor="end">{fmt(value)}</text>')
    return out


def rank_svg(series: dict[str, list[tuple[int, int]]], title: str) -> str:
    parts = _frame(title)
    points = [p for pts in series.values() for p in pts]
    if not points:
        parts.append(f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no run with a rank '
                     'and a parameter count yet</text>')
        return "\n".join([*parts, "</svg>"]) + "\n"
    x_max = max(r for r, _ in points)
    y_max = max(n for _, n in points) * 1.1 or 1
    ranks = sorted({r for r, _ in points})
    parts += _y_ticks(y_max)

    def xy(rank: float, n: float) -> tuple[float, float]:
        return (_L + (_W - _L - _R) * rank / (x_max * 1.05),
                _H - _B - (_H - _T - _B) * n / y_max)

    for rank in ranks:
        x, _ = xy(rank, 0)
        parts.append(f'<text x="{x:.1f}" y="{_H - _B + 16}" text-anchor="middle">{rank}</text>')
    parts.append(f'<text x="{(_L + _W - _R) / 2}" y="{_H - 18}" text-anchor="middle">LoRA rank r'
                 '</text>')
    parts.append(f'<text x="16" y="{(_T + _H - _B) / 2}" text-anchor="middle" transform="rotate('
                 f'-90 16 {(_T + _H - _B) / 2})">trainable parameters</text>')
    for i, (method, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(r, n) for r, n in pts))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for r, n in pts:
            x, y = xy(r, n)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                         f'<title>{escape(method)} r={r}: {n:,}</title></circle>')
            parts.append(f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle" '
                         f'font-size="10">{human(n)}</text>')
        parts.append(f'<text x="{_L + 10}" y="{_T + 14 + 16 * i}" fill="{colour}">'
                     f'● {escape(method)}</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def methods_svg(groups: dict[str, dict[str, float | None]], title: str) -> str:
    """Grouped bars, each measure as a share of its largest value (their units differ); the
    real value is written over each bar."""
    parts = _frame(title)
    if not groups:
        return "\n".join([*parts, "</svg>"]) + "\n"
    tops = {k: max((g[k] or 0.0) for g in groups.values()) or 1.0 for k, _ in MEASURES}
    parts += _y_ticks(100, fmt=lambda v: f"{v:.0f}%")
    slot = (_W - _L - _R) / len(groups)
    bar = slot * 0.8 / len(MEASURES)
    for gi, (label, values) in enumerate(groups.items()):
        x0 = _L + slot * gi + slot * 0.1
        for mi, (key, _) in enumerate(MEASURES):
            value = values.get(key)
            if value is None:
                continue
            height = (_H - _T - _B) * value / tops[key]
            x, y = x0 + bar * mi, _H - _B - height
            shown = f"{value:.2f}" if key == "score" else human(value)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 1:.1f}" height="{height:.1f}"'
                         f' fill="{COLOURS[mi]}"><title>{escape(label)}: {shown}</title></rect>')
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                         f'font-size="9">{shown}</text>')
        lx, ly = x0 + slot * 0.4, _H - _B + 16
        tilt = f' transform="rotate(-20 {lx:.1f} {ly})"' if len(groups) > 6 else ""  # 10 fit
        parts.append(f'<text x="{lx:.1f}" y="{ly}" text-anchor="middle"{tilt}>{escape(label)}</text>')
    for mi, (_, words) in enumerate(MEASURES):
        parts.append(f'<text x="{_L + 10 + 170 * mi}" y="{_H - 18}" fill="{COLOURS[mi]}">'
                     f'■ {escape(words)}</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def write_charts(rows: list[dict[str, Any]], folder: str | Path, name: str) -> list[Path]:
    """Both figures as SVG files in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rank = folder / "params-vs-rank.svg"
    rank.write_text(rank_svg(rank_series(rows), f"{name}: trainable parameters vs LoRA rank"),
                    encoding="utf-8")
    methods = folder / "methods.svg"
    methods.write_text(methods_svg(method_groups(rows), f"{name}: per method (share of the largest)"),
                       encoding="utf-8")
    return [rank, methods]
