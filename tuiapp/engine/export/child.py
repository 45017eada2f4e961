"""An export in its own process: ``python -m tuiapp.engine.export.child --home H --ref R --quant Q``.

The TUI never merges or converts in its own process: a crash or an out-of-memory kill must not
take it down, and a merge holding the GIL would freeze it. The child runs
``export_job.run_export`` and writes one JSON line per event to its stdout (anything libraries
print goes to stderr instead):

    start      {"out_dir", "stem", "quants", "steps"?}     before the first step
    progress   {"step": str, "done": int, "total": int}     one per step, then "done"
    result     {"result": run_export's dict}                exit 0 (parity may still have failed)
    error      {"message": str, "step": str}                exit 1 (2: the arguments were refused)
    cancelled  {"removed": [paths]}                         exit 3, after SIGTERM

On an error or a cancel the child removes what the store does not record (``remove_unrecorded``):
half-written ``*.partial`` files, GGUF files written but not yet parity-checked, the scratch f16
source and a merged folder it made, so nothing is left looking like a finished export. Files
already checked and recorded stay with their rows. If the child is killed outright the parent
(``ExportProcess``) runs the same clean-up from the ``start`` line.

The parent side, ``ExportProcess``, starts the child and yields its events; ``export_sources``
and ``plan_sizes`` serve the Export screen's pickers. No Textual, no torch at import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_ARGS, EXIT_CANCELLED = 0, 1, 2, 3
CANCEL_GRACE_S = 10.0  # after SIGTERM, how long the child gets before SIGKILL


# ------------------------------------------------------------------ what can be exported


def export_sources(store: Any) -> list[dict[str, Any]]:
    """Every REF ``resolve_source`` accepts that the store knows, newest first: completed runs
    with a ``final/`` folder, and HF / adapter model folders that exist (runs' own adapters are
    listed once, as their run). Paths only; nothing is loaded."""
    found: list[dict[str, Any]] = []
    finals: set[str] = set()
    for run in store.list_runs(status="completed"):
        final = Path(run.output_dir or "") / "final"
        if not run.output_dir or not final.is_dir():
            continue
        finals.add(str(final.resolve()))
        name = f" {run.name}" if run.name else ""
        found.append({"ref": str(run.id), "label": f"run {run.id}{name} ({run.kind})",
                      "kind": "run", "created_at": run.created_at})
    for model in store.list_models():
        folder = Path(model.path)
        if model.kind not in ("hf", "adapter") or not folder.is_dir():
            continue
        if str(folder.resolve()) in finals:
            continue
        found.append({"ref": str(folder), "label": f"{model.name} ({model.kind} model #{model.id})",
                      "kind": "model", "created_at": model.created_at})
    found.sort(key=lambda s: s["created_at"] or "", reverse=True)
    return found


def plan_sizes(ref: str, store: Any, quants: list[str]) -> dict[str, Any]:
    """``plan_export`` in JSON-able words: source stem, predicted bytes per type and in total,
    the GGUF writer's name.
    Reads config.json and safetensors headers only (numpy, no torch)."""
    from tuiapp.engine.export.job import plan_export

    plan = plan_export(ref, store, quants)
    source = plan["source"]
    return {"stem": source.stem, "merge": source.adapter_dir is not None,
            "predicted": plan["predicted"], "total": plan["total_predicted"],
            "writer": plan["writer"].name}


# ------------------------------------------------------------------ clean-up


def remove_unrecorded(out_dir: str | Path, stem: str, quants: list[str], store: Any,
                      made_merged: bool, made_out_dir: bool) -> list[str]:
    """Delete what an unfinished export left that no export row points at; returns the paths."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    recorded = {e.path for e in store.list_exports()}
    doomed = list(out.glob("*.partial")) + [out / f".{stem}-f16-source.gguf"]
    doomed += [out / f"{stem}-{q}.gguf" for q in quants]
    removed = []
    for path in doomed:
        if path.is_file() and str(path) not in recorded:
            path.unlink()
            removed.append(str(path))
    merged = out / "merged"
    if made_merged and merged.is_dir():
        shutil.rmtree(merged, ignore_errors=True)
        removed.append(str(merged))
    if made_out_dir and not any(out.iterdir()):
        out.rmdir()
        removed.append(str(out))
    return removed


# ------------------------------------------------------------------ the child


class _Cancelled(BaseException):
    """SIGTERM arrived: unwinds run_export like Ctrl-C would (BaseException, so no step's
    ``except Exception`` swallows it)."""


def _emit(stream, kind: str, **fields: Any) -> None:
    stream.write(json.dumps({"event": kind, "t": time.time(), **fields}, default=str) + "\n")
    stream.flush()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuiapp.engine.export.child")
    parser.add_argument("--home", required=True, help="the workspace home")
    parser.add_argument("--db", help="the store file (default: HOME/tuneloop.db)")
    parser.add_argument("--ref", required=True, help="run id or model / adapter folder")
    parser.add_argument("--quant", default="f16", help="comma-separated output types")
    parser.add_argument("--ollama", action="store_true")
    parser.add_argument("--card", action="store_true")
    parser.add_argument("--out", help="output folder (default: HOME/exports/<stem>-<time>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # JSON lines get the real stdout; fd 1 then points at stderr, so a library's print (or
    # llama.cpp writing to fd 1) can never break a line the parent parses.
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args = _parse(argv)

    from store import Store
    from tuiapp import paths
    from tuiapp.engine.export.job import parse_quants, resolve_source, run_export
    from tuiapp.engine.export.steps import ExportError

    store = Store(args.db or Path(args.home) / paths.DB_NAME)
    try:
        quants = parse_quants(args.quant)
        source = resolve_source(args.ref, store)
    except ExportError as exc:
        _emit(events, "error", message=str(exc), step="start")
        return EXIT_ARGS
    out_dir = Path(args.out).expanduser() if args.out else (
        Path(args.home) / "exports" / f"{source.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    made_out_dir = not out_dir.exists()
    made_merged = source.adapter_dir is not None and not (out_dir / "merged").exists()
    _emit(events, "start", out_dir=str(out_dir), stem=source.stem, quants=quants,
          made_out_dir=made_out_dir, made_merged=made_merged)

    def on_term(signum, frame):  # noqa: ARG001 - signal handler signature
        raise _Cancelled()

    signal.signal(signal.SIGTERM, on_term)
    step = {"name": "start"}

    def progress(label: str, done: int, total: int) -> None:
        step["name"] = label
        _emit(events, "progress", step=label, done=done, total=total)

    def clean() -> list[str]:
        return remove_unrecorded(out_dir, source.stem, quants, store, made_merged, made_out_dir)

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        result = run_export(args.ref, store, args.home, quants, ollama=args.ollama,
                            card=args.card, out=out_dir, progress=progress)
    except _Cancelled:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not stop the clean-up
        _emit(events, "cancelled", step=step["name"], removed=clean())
        return EXIT_CANCELLED
    except ExportError as exc:
        _emit(events, "error", message=str(exc), step=step["name"], removed=clean())
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the parent shows words; the traceback goes to stderr
        traceback.print_exc()
        _emit(events, "error", message=f"{type(exc).__name__}: {exc}", step=step["name"],
              removed=clean())
        return EXIT_FAILED
    _emit(events, "result", result=result)
    return EXIT_OK


# ------------------------------------------------------------------ the parent side


class ExportProcess:
    """One export child: ``events()`` yields its JSON lines until it ends; ``cancel()`` stops it
    (SIGTERM, then SIGKILL after ``grace`` s). Safe to cancel from another thread."""

    def __init__(self, home: str | Path, db: str | Path, ref: str, quants: list[str], *,
                 ollama: bool = False, card: bool = False, out: str | Path | None = None,
                 python: str = sys.executable, grace: float = CANCEL_GRACE_S) -> None:
        cmd = [python, "-m", "tuiapp.engine.export.child", "--home", str(home), "--db", str(db),
               "--ref", str(ref), "--quant", ",".join(quants)]
        cmd += ["--ollama"] if ollama else []
        cmd += ["--card"] if card else []
        cmd += ["--out", str(out)] if out else []
        self.command = cmd
        self.grace = grace
        self.cancelled = False
        self.start_event: dict[str, Any] | None = None
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: it can never fill and block
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)  # Ctrl-C in the TUI is not for it

    def events(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours; stdout carries only our lines, but never crash on one
            if event.get("event") == "start":
                self.start_event = event
            yield event
        self.proc.wait()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def cancel(self) -> None:
        if self.proc.poll() is not None:
            return
        self.cancelled = True
        self.proc.terminate()
        timer = threading.Timer(self.grace, self._kill_if_alive)
        timer.daemon = True
        timer.start()

    def _kill_if_alive(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stderr_tail(self, lines: int = 12) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def clean_after_kill(self, store: Any) -> list[str]:
        """The child could not clean up (killed): remove what it left unrecorded."""
        start = self.start_event
        if not start:
            return []
        return remove_unrecorded(start["out_dir"], start["stem"], start["quants"], store,
                                 start.get("made_merged", False), start.get("made_out_dir", False))

    def close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def died_message(returncode: int, stderr_tail: str) -> str:
    """Why the child ended without a result or an error line, for people."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = f"the export process was killed by {name}"
        if name == "SIGKILL":
            why += " (out of memory? a smaller type or fewer types at once may fit)"
    else:
        why = f"the export process died with exit code {returncode}"
    return why + (f"; its last output:\n{stderr_tail}" if stderr_tail else "; it printed nothing.")


if __name__ == "__main__":
    sys.exit(main())
