"""What the Export screen shows, as plain functions and messages: type choices, sizes, parity
figures, result rows and past-export rows. No widgets here, so each is easy to test and reuse.

The messages live here rather than in tuiapp/messages.py because only this screen posts them.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.message import Message

# Every type export.QUANT_TYPES supports, in the order a person chooses from, with what it is.
# (Kept here as plain names so the screen can draw them without importing the engine.)
OUTPUT_TYPES: tuple[tuple[str, str], ...] = (
    ("f16", "16-bit float, the reference"),
    ("bf16", "16-bit brain float"),
    ("f32", "32-bit float, largest"),
    ("q8_0", "8-bit, near lossless"),
    ("q6_k", "6.6-bit k-quant"),
    ("q5_k_m", "5.5-bit k-quant, mixed"),
    ("q5_k_s", "5.5-bit k-quant"),
    ("q5_1", "6-bit legacy"),
    ("q5_0", "5.5-bit legacy"),
    ("q4_k_m", "4.5-bit k-quant, mixed"),
    ("q4_k_s", "4.5-bit k-quant"),
    ("q4_1", "5-bit legacy"),
    ("q4_0", "4.5-bit legacy"),
    ("iq4_nl", "4.5-bit non-linear"),
    ("iq4_xs", "4.25-bit non-linear"),
    ("q3_k_l", "3.4-bit k-quant, large"),
    ("q3_k_m", "3.4-bit k-quant, mixed"),
    ("q3_k_s", "3.4-bit k-quant"),
    ("q2_k", "2.6-bit k-quant, smallest"),
)
DEFAULT_TYPES = ("f16", "q8_0")
# path, full sha256 and the predicted size are in the detail under the table (kept narrow)
RESULT_COLUMNS = ("type", "size", "sha256", "parity", "max |Δlogit|", "top-1", "greedy")
EXPORT_COLUMNS = ("id", "run", "format", "quant", "size", "sha256", "parity", "status", "path")


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def cli_command(ref: str, quants: list[str], ollama: bool, card: bool, out: str) -> str:
    """The headless command doing what the screen will do (shown so it can be scripted)."""
    ref_arg = ref if ref and " " not in ref else f"'{ref}'"
    parts = ["tuneloop export", ref_arg or "REF", "--quant", ",".join(quants) or "TYPES"]
    parts += ["--ollama"] if ollama else []
    parts += ["--card"] if card else []
    parts += ["--out", out] if out else []
    return " ".join(parts)


def sizes_table(predicted: dict[str, int], order: list[str]) -> Table:
    table = Table("type", "predicted size", box=None, padding=(0, 2, 0, 0), show_edge=False,
                  header_style="bold")
    for q in order:
        if q in predicted:
            table.add_row(q, human_size(predicted[q]))
    table.add_row(Text("total", "bold"),
                  Text(human_size(sum(predicted.get(q, 0) for q in order)), "bold"))
    return table


def parity_summary(parity: Any) -> str:
    """One cell for a stored parity report: the figures a person compares."""
    if not isinstance(parity, dict) or not parity:
        return ""
    logits, greedy = parity.get("logits") or {}, parity.get("greedy") or {}
    parts = []
    if logits.get("max_abs_diff") is not None:
        parts.append(f"Δ{logits['max_abs_diff']:.2g}")
    if logits.get("top1_agreement") is not None:
        parts.append(f"top-1 {logits['top1_agreement']:.0%}")
    if greedy.get("prompts"):
        parts.append(f"greedy {greedy.get('agreeing')}/{greedy['prompts']}")
    if not parts and parity.get("reasons"):
        parts.append(str(parity["reasons"][0])[:40])
    return ", ".join(parts)


def result_cells(f: dict[str, Any]) -> tuple[Text, ...]:
    """One row of the results table for a file of run_export's result."""
    fig = f.get("figures") or {}
    ok = f.get("status") == "ok"
    style = "green" if ok else "red"
    diff = fig.get("max_abs_diff")
    top1 = fig.get("top1_agreement")
    greedy = f"{fig['greedy_agreeing']}/{fig['greedy_prompts']}" if fig.get("greedy_prompts") else ""
    return (
        Text(f["quant"]),
        Text(human_size(f.get("size_bytes"))),
        Text((f.get("sha256") or "")[:12]),
        Text("passed" if ok else "FAILED", style),
        Text("" if diff is None else f"{diff:.3g}", style),
        Text("" if top1 is None else f"{top1:.0%}", style),
        Text(greedy, style),
    )


def file_detail(f: dict[str, Any]) -> Text:
    """Everything about one exported file: full path and sha256, and why parity failed."""
    text = Text()
    text.append(f"{f['quant']}  ", "bold")
    text.append("parity passed" if f.get("status") == "ok" else "parity FAILED",
                "green" if f.get("status") == "ok" else "bold red")
    text.append(f"\npath    {f['path']}\nsha256  {f.get('sha256') or ''}")
    text.append(f"\nsize    {human_size(f.get('size_bytes'))} ({f.get('size_bytes')} bytes; "
                f"predicted {human_size(f.get('predicted_bytes'))})")
    fig = f.get("figures") or {}
    if fig.get("tokenization_identical") is False:
        text.append("\ntokenization differs from the Hugging Face tokenizer", "red")
    for reason in f.get("reasons") or []:
        text.append(f"\n✗ {reason}", "red")
    for line in (f.get("parity") or {}).get("fallbacks") or []:
        text.append(f"\nllama.cpp: {line}", "dim")
    return text


def outcome_text(result: dict[str, Any]) -> Text:
    """The line under the results: where the files are, Modelfile / card, notes."""
    failed = [f["quant"] for f in result["files"] if f["status"] != "ok"]
    text = Text()
    if failed:
        text.append(f"✗ parity failed for {', '.join(failed)}: kept as *.failed.gguf, recorded "
                    "as failed, not offered as models.\n", "bold red")
    else:
        text.append("✓ every file passed its parity check.\n", "green")
    text.append(f"folder     {result['out_dir']}")
    if result.get("merged_dir"):
        text.append(f"\nmerged     {result['merged_dir']}")
    if result.get("modelfile"):
        text.append(f"\nModelfile  {result['modelfile']}")
    if result.get("card"):
        text.append(f"\ncard       {result['card']}")
    for note in result.get("notes") or []:
        text.append(f"\nnote: {note}", "dim")
    return text


def export_rows(store: Any) -> list[tuple]:
    """The store's exports, newest first, one tuple per EXPORT_COLUMNS."""
    rows = []
    for e in store.list_exports():
        rows.append((e.id, e.run_id or "", e.format, e.quant or "", human_size(e.size_bytes),
                     (e.sha256 or "")[:12], parity_summary(e.parity), e.status, e.path))
    return sorted(rows, key=lambda r: -r[0])


# ---- messages (workers → the screen) ----------------------------------------------------------


class ExportSourcesLoaded(Message):
    """What the source picker offers ([{ref, label, kind, created_at}], newest first) and the
    store's past exports."""

    def __init__(self, sources: list[dict], exports: list[tuple]) -> None:
        super().__init__()
        self.sources = sources
        self.exports = exports


class ExportPlanReady(Message):
    """Predicted sizes for (ref, quants); `error` in words when the source cannot be planned."""

    def __init__(self, key: tuple, plan: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.plan = plan
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ExportPlanReady)


class ExportStep(Message):
    """The child started a step; coalesces to the newest (the bar only shows the latest)."""

    def __init__(self, step: str, done: int, total: int) -> None:
        super().__init__()
        self.step = step
        self.done = done
        self.total = total

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ExportStep)


class ExportStarted(Message):
    """The child has resolved the source and says where its files go."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir


class ExportEnded(Message):
    """The child is gone: `result` (run_export's dict) or `error` in words, or `cancelled`;
    `removed` lists what an unfinished export left and was deleted."""

    def __init__(self, result: dict | None = None, error: str | None = None,
                 cancelled: bool = False, removed: list[str] | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error
        self.cancelled = cancelled
        self.removed = removed or []
