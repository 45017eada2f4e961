"""A few lines of a file around one line, that line highlighted.

`read_window` runs in a worker (files can be big); the widget only draws what it is given.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from tuiapp.widgets.colors import theme_color

MAX_COLUMNS = 400  # a JSONL row can be megabytes; the preview only needs its start


def read_window(path: Path, line: int, context: int = 5) -> tuple[int, list[str]]:
    """Lines `line-context .. line+context` (1-based) of `path`: (first line number, lines)."""
    first = max(1, line - context)
    with Path(path).open("r", encoding="utf-8", errors="replace") as f:
        lines = [raw.rstrip("\n")[:MAX_COLUMNS] for raw in islice(f, first - 1, line + context)]
    return first, lines


class FilePreview(Static):
    DEFAULT_CSS = """
    FilePreview { height: auto; min-height: 3; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("Pick a problem to see its line here.", id=id)
        self.path: Path | None = None
        self.line: int | None = None
        self.first_line = 1
        self.lines: list[str] = []

    def show(self, path: Path, line: int, first_line: int, lines: list[str]) -> None:
        self.path, self.line, self.first_line, self.lines = path, line, first_line, lines
        if not lines:
            self.update(Text(f"{path.name} has no line {line}.", style="dim"))
            return
        width = len(str(first_line + len(lines)))
        # One screen line per file line: long JSONL rows are cut, not wrapped.
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{path.name}, line {line}\n", style="bold")
        for offset, content in enumerate(lines):
            number = first_line + offset
            here = number == line
            text.append(
                f"{'▶' if here else ' '}{str(number).rjust(width)} │ ",
                style=f"bold {theme_color(self, 'warning')}" if here else "dim",
            )
            text.append(content, style="reverse" if here else "")
            if offset < len(lines) - 1:
                text.append("\n")
        self.update(text)

    def note(self, text: str) -> None:
        """Show a sentence instead of lines (e.g. a problem with no line to point at)."""
        self.line, self.lines = None, []
        self.update(Text(text, style="dim"))

    @property
    def highlighted_text(self) -> str | None:
        """The content of the highlighted line (tests and screen readers use it)."""
        if self.line is None or not self.lines:
            return None
        index = self.line - self.first_line
        return self.lines[index] if 0 <= index < len(self.lines) else None
