"""Theme colours for Rich `Text` (which does not understand Textual's `$variables`)."""

from __future__ import annotations

from textual.widget import Widget

_FALLBACK = {"primary": "#5fafff", "warning": "#ffaf00", "error": "#ff5f5f", "success": "#87d75f"}


def theme_color(widget: Widget, name: str) -> str:
    try:
        value = getattr(widget.app.current_theme, name)
    except Exception:  # not mounted yet (no app), or a theme without that slot
        value = None
    return value or _FALLBACK.get(name, "default")
