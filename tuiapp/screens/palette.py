"""Command palette entries: go to any area, and run any documented key of the current screen.

Built from AREA_KEYS and the screen's BINDINGS, so the palette and the keys never disagree.
"""

from __future__ import annotations

from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from tuiapp.screens.areas import AREA_KEYS


def _open_sweeps(app) -> None:
    from tuiapp.screens.sweeps import open_sweeps  # plotext loads only when asked for

    open_sweeps(app)


def _open_merge(app) -> None:
    from tuiapp.screens.merge import open_merge

    open_merge(app)


class TuneloopCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        commands: list[tuple[str, object, str]] = []
        for mode, title, fkey, letter in AREA_KEYS:
            commands.append(
                (
                    f"Go to {title}",
                    partial(app.action_area, mode),
                    f"Switch to the {title} area ({fkey.upper()} or {letter})",
                )
            )
        screen = self.screen
        seen: set[str] = set()
        for klass in type(screen).__mro__:
            for binding in Binding.make_bindings(klass.__dict__.get("BINDINGS", ())):
                if not binding.description or binding.action in seen or binding.system:
                    continue
                seen.add(binding.action)
                area = getattr(screen, "AREA_TITLE", "") or type(screen).__name__
                commands.append(
                    (
                        f"{area}: {binding.description}",
                        # a coroutine function: the palette awaits it (App.call_later)
                        partial(screen.run_action, binding.action),
                        f"key {app.get_key_display(binding)}",
                    )
                )
        commands.append(("Help: every key", app.action_help, "key F1"))
        commands.append(("Sweeps: compare a sweep's runs as charts", partial(_open_sweeps, app),
                         "the runs of `tuneloop sweep`: params vs rank, per-method bars"))
        commands.append(("Merge: combine adapters or models", partial(_open_merge, app),
                         "LoRA via PEFT (linear, cat, svd, TIES, DARE), models by TIES/DARE/SLERP"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
