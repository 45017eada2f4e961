"""Win-rates as bars: one line per pair of models (wins · ties/both bad · losses) and the
Bradley-Terry strengths with their 95% intervals. Draws the dict `winrate.summarize` returns."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

WIN, TIE, LOSS = "#87d75f", "#8a8a8a", "#ff5f5f"


def bar(wins: float, ties: float, losses: float, width: int) -> Text:
    """A bar split in proportion (largest remainders, so the widths add up exactly)."""
    total = wins + ties + losses
    text = Text()
    if total <= 0 or width <= 0:
        return text.append("·" * max(width, 0), style="dim")
    raw = [wins / total * width, ties / total * width, losses / total * width]
    cells = [int(x) for x in raw]
    for k in sorted(range(3), key=lambda k: raw[k] - cells[k], reverse=True)[: width - sum(cells)]:
        cells[k] += 1
    for n, char, colour in zip(cells, ("█", "▒", "█"), (WIN, TIE, LOSS), strict=True):
        text.append(char * n, style=colour)
    return text


def render_win_rates(result: dict, width: int = 36, names: dict[str, str] | None = None) -> Text:
    names = names or {}
    out = Text()
    pairs = result.get("pairs") or []
    if not pairs:
        return out.append("No comparisons yet: label a pair to see win-rates.", style="dim")
    name = lambda ref: names.get(ref, ref)  # noqa: E731
    for row in pairs:
        out.append(f"{name(row['a'])} vs {name(row['b'])}", style="bold")
        out.append(f"  {row['win_rate']:.0%} for {name(row['a'])}\n")
        out.append_text(bar(row["wins"], row["ties"] + row["both_bad"], row["losses"], width))
        out.append(f"\n{row['wins']} won · {row['ties']} tie · {row['both_bad']} both bad · "
                   f"{row['losses']} lost\n", style="dim")
    strengths = result.get("strengths") or []
    if strengths:
        out.append("Bradley-Terry strength (95% CI)\n", style="bold")
        for s in strengths:
            out.append(f"{name(s['model'])[:18]:<18} {s['score']:+.2f} "
                       f"[{s['low']:+.2f}, {s['high']:+.2f}]\n")
    out.rstrip()
    return out


class PreferenceBar(Static):
    """`show(result)` with a `winrate.summarize` dict; `result` keeps the last one drawn."""

    DEFAULT_CSS = "PreferenceBar { height: auto; }"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result: dict = {}

    def show(self, result: dict, names: dict[str, str] | None = None) -> None:
        self.result = result
        self.update(render_win_rates(result, width=max(10, (self.size.width or 38) - 2),
                                     names=names))
