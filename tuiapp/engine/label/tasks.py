"""Preference labelling beyond the store's event log: making label tasks from models, drawing
sides, repeats for self-agreement, statistics, and exporting labels as a dataset version.

No Textual. Generation goes through a Generator (`complete(ref, prompt, params, system=...)`);
everything else is the store's label API.

Conventions this module fixes:
- A task's candidates are in model order (a = first model of the pair). Which one is *shown* as
  A is `display_swapped(task)`: drawn once when the task is made (stored in meta["show_swapped"]),
  or from the task id for tasks made elsewhere. Labels are stored in candidate order.
- A repeat (a pair re-shown to measure self-agreement) is a NEW task with meta {"repeat_of": id},
  so the one-live-label-per-task rule holds; repeats count for agreement only, never in
  win-rates or exports.
- A rewrite (a label with `edited` text; its choice names the candidate rewritten) is a NEW
  answer that beats the one it replaced. It is never a win for the rewritten model: win-rates
  and Bradley-Terry leave it out (it says nothing about model vs model, and which answer a
  person rewrites — often the nearly-right one — is no loss for it either); stats count it per
  rewritten model under "rewritten".
- Export: a/b labels give chosen/rejected; a rewrite is chosen against the candidate it was
  written from (chosen = rewrite, rejected = original); "both bad" rows are kept with `"both_bad": true`
  (trainers that should not learn from them filter on it); ties, skips, pairs whose two
  answers are the same text and pairs with an empty answer are left out (lineage["left_out"]
  counts them by reason).
- Sources: a person's labels ("human") by default everywhere. An export may take the AI judge's
  labels (judge.py) instead, or "both": the person's label where there is one, else the
  judge's — a judge never outvotes a person. Such rows carry "label_source", and lineage says
  which source was asked for and how many rows came from each.
"""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from store.refs import canonical_ref

EXPORT_CHOICES = ("a", "b", "both_bad")
EXPORT_SOURCES = ("human", "judge", "both")


class LabelsError(ValueError):
    """Something about labelling a person can fix (bad REFs, no prompts, nothing to export)."""


# ---- sides and repeats ---------------------------------------------------------------------


def display_swapped(task: Any) -> bool:
    """Whether candidate b is shown on the A side for this task."""
    meta = task.meta or {}
    if "show_swapped" in meta:
        return bool(meta["show_swapped"])
    # str seeds hash with SHA-512 in `random`: the same in every process
    return random.Random(f"{task.id}\x00{task.prompt}").random() < 0.5


def is_repeat(task: Any) -> bool:
    return bool((task.meta or {}).get("repeat_of"))


def make_repeat(store: Any, original: Any, shown_swapped: bool) -> Any:
    """A new task re-showing `original` with the given sides (the opposite of how it was
    labelled, so a labeller who just remembers the side disagrees with themself)."""
    meta = {"repeat_of": original.id, "show_swapped": bool(shown_swapped)}
    return store.create_label_task(original.prompt, original.candidates, task_set=original.task_set,
                                   system=original.system, source="repeat", meta=meta)


# ---- making tasks --------------------------------------------------------------------------


def pairs_of(refs: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of the REFs, each in its canonical spelling (`1` and `run:1` are one run)."""
    refs = [canonical_ref(r) for r in refs if r and r.strip()]
    if len(refs) < 2 or len(set(refs)) < len(refs):
        raise LabelsError("give two or more different model REFs, e.g. --models base,run:3")
    return list(combinations(refs, 2))


def load_prompts(spec: str | Path, store: Any = None, n: int | None = None) -> list[dict]:
    """[{"prompt": str, "system": str | None}] from a JSONL prompt set (or SFT conversations) or
    a dataset version id/name — the same sources `tuneloop eval` reads."""
    from tuiapp.engine.infer.evaluate import EvalError, load_prompt_set

    try:
        records = load_prompt_set(spec, store).records
    except EvalError as exc:
        raise LabelsError(str(exc)) from None
    prompts = []
    for rec in records:
        prompt, system = rec["prompt"], rec.get("system")
        if isinstance(prompt, list):  # a message list: its system and last user turn
            system = next((m["content"] for m in prompt if m.get("role") == "system"), system)
            users = [m["content"] for m in prompt if m.get("role") == "user"]
            prompt = users[-1] if users else ""
        if isinstance(prompt, str) and prompt.strip():
            prompts.append({"prompt": prompt, "system": system})
    if n is not None:
        prompts = prompts[: max(0, int(n))]
    if not prompts:
        raise LabelsError(f"prompt set {str(spec)!r} has no prompts")
    return prompts


def _params(params: Any):
    from tuiapp.engine.infer.params import GenerationParams

    if params is None or isinstance(params, dict):
        return GenerationParams(**(params or {"max_new_tokens": 64}))
    return params


class _Maker:
    """Generates each (model, prompt) answer once and turns pairs into tasks."""

    def __init__(self, store, generator, refs, prompts, task_set, seed, params):
        self.store, self.generator = store, generator
        self.pairs = pairs_of(refs)
        self.prompts = list(prompts)
        self.task_set = task_set or default_task_set(refs)
        self.rng = random.Random(seed)
        self.params = _params(params)
        self._answers: dict[tuple[str, int], dict] = {}

    def plan(self) -> list[tuple[int, tuple[str, str]]]:
        return [(i, pair) for i in range(len(self.prompts)) for pair in self.pairs]

    def _answer(self, ref: str, i: int) -> dict:
        if (ref, i) not in self._answers:
            p = self.prompts[i]
            chunk = self.generator.complete(ref, p["prompt"], self.params, system=p.get("system"))
            self._answers[(ref, i)] = {"model_ref": ref, "output": chunk.text,
                                       "generation_id": (chunk.meta or {}).get("generation_id")}
        return self._answers[(ref, i)]

    def make(self, i: int, pair: tuple[str, str]) -> Any:
        candidates = [self._answer(ref, i) for ref in pair]
        p = self.prompts[i]
        meta = {"pair": list(pair), "show_swapped": self.rng.random() < 0.5, "prompt_index": i}
        return self.store.create_label_task(p["prompt"], candidates, task_set=self.task_set,
                                            system=p.get("system"), source="generated", meta=meta)


def default_task_set(refs: Sequence[str]) -> str:
    return " vs ".join(canonical_ref(r) for r in refs if r.strip())


def new_tasks(store: Any, generator: Any, refs: Sequence[str], prompts: Any, n: int | None = None,
              task_set: str | None = None, seed: int = 0, params: Any = None,
              progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """Label tasks for every pair of `refs` on every prompt (the first `n` prompts), answers
    generated now. `prompts`: a prompt-set spec (file / dataset version) or a list of
    {"prompt", "system"?} dicts. `progress(done, total)` after each task."""
    if not isinstance(prompts, list):
        prompts = load_prompts(prompts, store, n)
    elif n is not None:
        prompts = prompts[:n]
    maker = _Maker(store, generator, refs, prompts, task_set, seed, params)
    plan, tasks = maker.plan(), []
    for done, (i, pair) in enumerate(plan, 1):
        tasks.append(maker.make(i, pair))
        if progress:
            progress(done, len(plan))
    return tasks


class TaskFeeder:
    """Makes tasks in a background thread, staying `ahead` tasks ahead of the labeller: the
    screen calls `consumed()` per labelled task and gets new ones through `on_task(task)`.
    Generation is the slow part, so the labeller never waits once the first few are ready."""

    def __init__(self, store: Any, generator: Any, refs: Sequence[str], prompts: Any, *,
                 task_set: str | None = None, n: int | None = None, ahead: int = 8, seed: int = 0,
                 params: Any = None, on_task: Callable[[Any], None] | None = None,
                 on_done: Callable[[int], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        if not isinstance(prompts, list):
            prompts = load_prompts(prompts, store, n)
        elif n is not None:
            prompts = prompts[:n]
        self._maker = _Maker(store, generator, refs, prompts, task_set, seed, params)
        self.task_set = self._maker.task_set
        self.total = len(self._maker.plan())
        self.made = 0
        self.ahead = max(1, int(ahead))
        self._consumed = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._on_task, self._on_done, self._on_error = on_task, on_done, on_error
        self._thread = threading.Thread(target=self._run, name="label-feeder", daemon=True)

    def start(self) -> TaskFeeder:
        self._thread.start()
        return self

    def consumed(self, count: int = 1) -> None:
        with self._cond:
            self._consumed += count
            self._cond.notify_all()

    def stop(self, wait: float | None = None) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if wait and self._thread.is_alive():
            self._thread.join(wait)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for i, pair in self._maker.plan():
                with self._cond:
                    while self.made - self._consumed >= self.ahead and not self._stop.is_set():
                        self._cond.wait(0.5)
                if self._stop.is_set():
                    break
                task = self._maker.make(i, pair)
                self.made += 1
                if self._on_task:
                    self._on_task(task)
        except Exception as exc:  # a model that fails to load: said once, the thread ends
            if self._on_error:
                self._on_error(str(exc).strip() or type(exc).__name__)
            return
        if self._on_done:
            self._on_done(self.made)


class LabelWriter:
    """One long-lived thread that runs label writes in the order they were asked for.

    The store keeps one SQLite connection per thread, so a fresh worker thread per keypress
    also paid for opening (and later closing) a connection on the critical path. Each job
    reports its own outcome (the screen's jobs post a message after the commit); an exception a
    job lets through is handed to `on_error` so the thread lives on.
    """

    def __init__(self, on_error: Callable[[Exception], None] | None = None,
                 name: str = "label-writer") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self._jobs.put((job, args))

    def close(self, wait: float | None = 5.0) -> None:
        """Runs what is queued, then ends the thread (waiting at most `wait` seconds)."""
        self._jobs.put(None)
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(wait)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, args = item
            try:
                job(*args)
            except Exception as exc:  # reported; the writer goes on
                if self._on_error:
                    self._on_error(exc)


# ---- reading labels back -------------------------------------------------------------------


def _labelled(store: Any, task_set: str | None,
              source: str = "human") -> tuple[dict[int, Any], dict[int, Any]]:
    """Tasks by id and the live label per task from `source` (EXPORT_SOURCES; "both": the
    person's where there is one, else the judge's)."""
    tasks = {t.id: t for t in store.list_label_tasks(task_set)}
    if source not in EXPORT_SOURCES:
        raise LabelsError(f"label source must be one of {', '.join(EXPORT_SOURCES)}, "
                          f"got {source!r}")
    order = {"human": ("human",), "judge": ("judge",), "both": ("judge", "human")}[source]
    live: dict[int, Any] = {}
    for src in order:  # later sources overwrite earlier ones: the person's label wins
        live.update({e.task_id: e for e in store.live_labels(task_set, source=src)
                     if e.task_id in tasks})
    return tasks, live


def comparisons(store: Any, task_set: str | None = None, _read=None) -> list[tuple[str, str, str]]:
    """(model of candidate a, model of candidate b, choice) per live label between two models;
    repeats and rewrites (a person's answer against one model's, see above) left out."""
    tasks, live = _read or _labelled(store, task_set)
    out = []
    for task_id, event in live.items():
        task = tasks[task_id]
        if is_repeat(task) or len(task.candidates) < 2 or event.edited:
            continue
        out.append((task.candidates[0]["model_ref"], task.candidates[1]["model_ref"], event.choice))
    return out


def rewritten_of(task: Any, event: Any) -> str | None:
    """The model whose answer a rewrite replaced (None for a label that is no rewrite)."""
    if not event.edited or len(task.candidates) < 2:
        return None
    return task.candidates[1 if event.choice == "b" else 0]["model_ref"]


KEY_NAMES = {"a": "A", "b": "B", "tie": "tie", "both_bad": "both bad", "skip": "skip"}


def key_pressed(event: Any) -> str:
    """The judgement as the labeller saw it: "A"/"B" by the side shown on screen (labels are
    stored in candidate order and sides are drawn per task), "rewrite A"/"rewrite B", "tie"…"""
    choice = event.choice
    if choice in ("a", "b") and event.swapped:
        choice = "b" if choice == "a" else "a"
    key = KEY_NAMES.get(choice, choice)
    return f"rewrite {key}" if event.edited and key in ("A", "B") else key


def agreement(store: Any, task_set: str | None = None, _read=None) -> dict[str, Any]:
    """Self-agreement over repeats: a repeat agrees when its label (in candidate order) equals
    the original's. Skips on either side do not count. `noise` = 1 - rate."""
    tasks, live = _read or _labelled(store, task_set)
    pairs = agree = 0
    for task_id, event in live.items():
        original = (tasks[task_id].meta or {}).get("repeat_of")
        first = live.get(original) if original else None
        if first is None or "skip" in (event.choice, first.choice):
            continue
        pairs += 1
        agree += event.choice == first.choice
    rate = agree / pairs if pairs else None
    return {"pairs": pairs, "agree": agree, "rate": rate,
            "noise": None if rate is None else 1.0 - rate}


def stats(store: Any, task_set: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Counts, pace, self-agreement and win-rates of one task set (None: all), and the AI
    judge's figures and agreement with a person (agreement.py) under "judge"."""
    from tuiapp.engine.label import agreement as judge_agreement
    from tuiapp.engine.label import winrate

    read = tasks, live = _labelled(store, task_set)  # one read serves every figure
    originals = [t for t in tasks.values() if not is_repeat(t)]
    done = [e for tid, e in live.items() if not is_repeat(tasks[tid])]
    elapsed = sorted(e.elapsed_ms for e in live.values() if e.elapsed_ms)
    mean_ms = sum(elapsed) / len(elapsed) if elapsed else None
    return {
        "task_set": task_set,
        "tasks": len(originals),
        "labelled": len(done),
        "remaining": len(originals) - len(done),
        "repeats": sum(1 for tid in live if is_repeat(tasks[tid])),
        "by_choice": dict(Counter(e.choice for e in done)),  # stored, candidate order
        "by_key": dict(Counter(key_pressed(e) for e in done)),  # as pressed on screen
        "rewritten": dict(Counter(m for tid, e in live.items() if not is_repeat(tasks[tid])
                                  and (m := rewritten_of(tasks[tid], e)))),
        "median_ms": elapsed[len(elapsed) // 2] if elapsed else None,
        "labels_per_minute": 60000.0 / mean_ms if mean_ms else None,
        "agreement": agreement(store, task_set, read),
        "win_rates": winrate.summarize(comparisons(store, task_set, read), n_boot=n_boot,
                                       seed=seed),
        "judge": judge_agreement.judge_vs_human(store, task_set),
    }


# ---- export --------------------------------------------------------------------------------


def export_rows(store: Any, task_set: str | None = None, source: str = "human"):
    """The preference rows (TRL conversational format) and their lineage (see to_dataset.py)."""
    from tuiapp.engine.label.to_dataset import export_rows as rows_of

    return rows_of(store, task_set, source)


def export(store: Any, task_set: str | None = None, out: str | Path | None = None, **kwargs) -> Any:
    """Live labels → a new immutable preference dataset version (see to_dataset.py)."""
    from tuiapp.engine.label.to_dataset import export as export_labels

    return export_labels(store, task_set, out, **kwargs)


def summary_lines(st: dict) -> Iterable[str]:
    """Plain-text lines for `tuneloop labels stats` (the screen draws its own)."""
    yield f"tasks {st['tasks']} · labelled {st['labelled']} · remaining {st['remaining']}"
    yield "keys pressed: " + (", ".join(f"{k} {v}" for k, v in sorted(st["by_key"].items()))
                              or "none")
    if st.get("rewritten"):
        yield ("rewrites (your answer beat the model's; not in win-rates): "
               + ", ".join(f"{k} {v}" for k, v in sorted(st["rewritten"].items())))
    if st["labels_per_minute"]:
        yield f"pace: {st['labels_per_minute']:.1f} labels/min (median {st['median_ms'] / 1000:.1f} s)"
    ag = st["agreement"]
    if ag["pairs"]:
        yield (f"self-agreement {ag['agree']}/{ag['pairs']} ({ag['rate']:.0%}); "
               f"label noise ≈ {ag['noise']:.0%}")
    if st.get("judge"):
        from tuiapp.engine.label import agreement as judge_agreement

        yield from judge_agreement.summary_lines(st["judge"])
