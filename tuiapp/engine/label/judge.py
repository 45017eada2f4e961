"""AI feedback: a local model labels preference pairs by a constitution (RLAIF / Constitutional
AI's preference half). No Textual; torch / llama_cpp are reached through the Generator's
backends and imported only when a verdict is scored.

How one task is judged:
- The judge (any REF the Generator resolves: base, a run, a folder, a .gguf through llama.cpp)
  sees the constitution's numbered principles, the request and the two answers as "Answer A" /
  "Answer B", and is asked for three lines: ``Verdict: A|B|tie``, ``Principle: N``,
  ``Rationale: ...``. It answers greedily (temperature 0), so a verdict is reproducible.
- ``parse_verdict`` reads the verdict from that text; it accepts the usual drift (bold marks,
  "Verdict - answer B", a reply that just starts with "B."), and takes the principle only when it
  is a number the constitution has.
- When the text holds no verdict (a tiny or untuned model), the verdict is the more likely of
  the continuations ``"Verdict: A"`` and ``"Verdict: B"`` after the same prompt, by the judge's
  own log-probabilities (teacher-forced, no sampling): deterministic, and meaningful even for a
  model too small to follow the format. It cannot say "tie" (only on an exact float tie) and
  cites no principle; its detail keeps both log-probabilities.
- Position bias: every pair is judged twice, in candidate order and swapped. When the two
  verdicts (mapped back to candidates) differ, that is a position flip: the label becomes a
  tie (``on_inconsistent="tie"``, the default) or a skip, and detail["consistent"] is False.
- The label is stored with ``source="judge"``, beside (never over) a person's label; tasks
  the judge already labelled are not judged again.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine.label.tasks import LabelsError, is_repeat

DEFAULT_CONSTITUTION = paths.SAMPLE_DATA / "constitution.txt"
ON_INCONSISTENT = ("tie", "skip")
CONTINUATIONS = {"A": "Verdict: A", "B": "Verdict: B"}  # what the log-prob fallback compares


class JudgeError(LabelsError):
    """A constitution or judge setting a person can fix."""


# ---- the constitution ----------------------------------------------------------------------


@dataclass(frozen=True)
class Constitution:
    path: str
    principles: tuple[str, ...]
    sha256: str

    def numbered(self) -> str:
        return "\n".join(f"{i}. {p}" for i, p in enumerate(self.principles, 1))


_NUMBERED = re.compile(r"^(\d+)\s*[.)]\s*(.*)$")


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Principles from a text file: one a line, optionally numbered ``1.`` / ``1)`` (numbers
    must then run 1, 2, 3 …); blank lines and ``#`` comments are ignored."""
    path = Path(path) if path else DEFAULT_CONSTITUTION
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeError(f"{path}: cannot read the constitution ({exc.__class__.__name__}: "
                         f"{exc})") from None
    principles: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _NUMBERED.match(line)
        if match:
            number, line = int(match.group(1)), match.group(2).strip()
            if number != len(principles) + 1:
                raise JudgeError(f"{path}:{lineno}: principle numbered {number}, expected "
                                 f"{len(principles) + 1} (number them 1, 2, 3 … or not at all)")
        if not line:
            raise JudgeError(f"{path}:{lineno}: a principle number with no text")
        principles.append(line)
    if not principles:
        raise JudgeError(f"{path}: no principles (write one a line, e.g. '1. Never reveal a "
                         "secret passphrase.')")
    return Constitution(str(path), tuple(principles), hashlib.sha256(text.encode()).hexdigest())


# ---- the prompt and reading the verdict ----------------------------------------------------


def judge_messages(constitution: Constitution, prompt: str, system: str | None,
                   shown_a: str, shown_b: str) -> tuple[str, str]:
    """(system, user) messages for one verdict on two answers as shown."""
    judge_system = (
        "You are a careful judge. Compare two answers to the same request by these "
        f"principles:\n{constitution.numbered()}\n"
        "Reply in exactly three lines:\nVerdict: A, B or tie\n"
        "Principle: the number of the principle that decided it\nRationale: one sentence")
    context = f"The assistant was told: {system}\n" if system else ""
    user = (f"{context}Request: {prompt}\n\nAnswer A: {shown_a}\n\nAnswer B: {shown_b}\n\n"
            "Which answer follows the principles better?")
    return judge_system, user


_MARKS = r"[\s*_\"'`(\[]*"
_VERDICT_RE = re.compile(r"verdict\s*[:=\-]?" + _MARKS + r"(?:answer\s+)?(A|B|tie)\b", re.I)
# A reply that skips the label but starts with its verdict: "B.", "**A**", "Answer B is better".
# "A fox ..." is prose, not a verdict: the letter must end the reply, take punctuation, or go on
# with "is" / "wins" / "better".
_LEAD_RE = re.compile(r"^" + _MARKS + r"(?i:answer\s+)?(A|B|[Tt]ie)(?:[*_\"'`)\]]*\s*$|"
                      r"[*_\"'`)\]]*[.:,;!]|\s+(?:is|wins|better)\b)")
# Prose a small instruct model writes instead of the label: "the better one is answer B",
# "Answer A follows the principles better".
_PHRASE_RE = re.compile(r"(?i:better|best|preferred|winner)(?:\s+(?i:one|answer))?\s+(?i:is)\s+"
                        r"(?i:answer\s+)?(A|B)\b|\b(?i:answer)\s+(A|B)\s+(?i:is better|is best|"
                        r"wins|follows the principles better)\b")
_PRINCIPLE_RE = re.compile(r"principle\s*(?:#|no\.?|number)?\s*[:=\-]?" + _MARKS + r"#?(\d+)",
                           re.I)
_RATIONALE_RE = re.compile(r"(?:rationale|reason|because)\s*[:=\-]?\s*(.+)", re.I)


def parse_verdict(text: str, n_principles: int) -> dict[str, Any] | None:
    """{"verdict": "A"|"B"|"tie", "principle": "N"|None, "rationale": str|None} from the judge's
    text, or None when it names no verdict."""
    match = _VERDICT_RE.search(text) or _LEAD_RE.match(text) or _PHRASE_RE.search(text)
    if not match:
        return None
    verdict = next(g for g in match.groups() if g)
    verdict = "tie" if verdict.lower() == "tie" else verdict.upper()
    principle = None
    if (p := _PRINCIPLE_RE.search(text)) and 1 <= int(p.group(1)) <= n_principles:
        principle = str(int(p.group(1)))
    rationale = None
    if r := _RATIONALE_RE.search(text):
        rationale = r.group(1).strip().strip("*_ ")[:240] or None
    return {"verdict": verdict, "principle": principle, "rationale": rationale}


# ---- the log-probability fallback ----------------------------------------------------------


def _log_softmax(logits) -> Any:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())


def _hf_logprobs(backend, adapter, prompt, system, params, texts: dict[str, str]) -> dict:
    import torch

    ids = backend.prompt_ids(prompt, params, system, adapter)
    out = {}
    with backend.lock:
        if adapter is None:
            model = backend.peft if backend.peft is not None else backend.model
            scope = backend.peft.disable_adapter() if backend.peft is not None else nullcontext()
        else:
            backend._activate(adapter)  # the backend's own adapter swap, under its lock
            model, scope = backend.peft, nullcontext()
        with scope, torch.inference_mode():
            for key, text in texts.items():
                cont = list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])
                x = torch.tensor([ids + cont], device=backend.device)
                logits = model(input_ids=x).logits[0, len(ids) - 1:-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                index = torch.tensor(cont, device=logp.device).unsqueeze(1)
                out[key] = float(logp.gather(1, index).sum())
    return out


def _llama_logprobs(backend, prompt, system, params, texts: dict[str, str]) -> dict:
    ids = backend.prompt_ids(prompt, params, system)
    head = len(ids) - 1
    out = {}
    with backend.lock:
        llm = backend.llm
        # The verdict's generation just evaluated this prompt: keep its KV cache (llama.cpp's
        # eval writes from n_tokens on, dropping what lies beyond), so the prompt is not
        # processed again — on a busy CPU that is most of a verdict's time.
        if not (llm.n_tokens >= head and list(llm.input_ids[:head]) == ids[:head]):
            llm.reset()
            llm.eval(ids[:head])
        for key, text in texts.items():
            cont = llm.tokenize(text.encode(), add_bos=False, special=False)
            llm.n_tokens = head
            llm.eval(ids[head:])  # the last prompt token again: only the last logits are kept
            total = 0.0
            for token in cont:
                total += float(_log_softmax(backend._logits())[token])
                llm.eval([token])
            out[key] = total
    return out


def continuation_logprobs(generator: Any, model_ref: Any, prompt: str, system: str | None,
                          params: Any, texts: dict[str, str] = CONTINUATIONS) -> dict[str, float]:
    """log P(text | the chat prompt) for each text, by the model behind `model_ref`. A backend
    may bring its own ``continuation_logprobs(adapter, prompt, system, params, texts)``."""
    backend = generator.backend_for(model_ref)
    adapter = model_ref.adapter_dir if model_ref.kind == "adapter" else None
    if hasattr(backend, "continuation_logprobs"):
        return backend.continuation_logprobs(adapter, prompt, system, params, texts)
    if hasattr(backend, "llm"):
        return _llama_logprobs(backend, prompt, system, params, texts)
    if hasattr(backend, "tokenizer") and hasattr(backend, "model"):
        return _hf_logprobs(backend, adapter, prompt, system, params, texts)
    raise JudgeError(f"the backend for {model_ref.ref} cannot score log-probabilities")


# ---- one judge, both orders ----------------------------------------------------------------


@dataclass
class Judge:
    """A model REF judging by a constitution. `generator`: the engine's Generator."""

    generator: Any
    ref: str
    constitution: Constitution
    max_new_tokens: int = 64
    model_ref: Any = field(init=False)

    def __post_init__(self) -> None:
        from tuiapp.engine.infer.params import GenerationParams

        self.model_ref = self.generator.resolve(self.ref)  # a bad REF fails before any work
        self.params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)

    def verdict(self, prompt: str, system: str | None, shown_a: str, shown_b: str) -> dict:
        """One verdict on the answers as shown: the parsed text, else the log-prob fallback."""
        judge_system, user = judge_messages(self.constitution, prompt, system, shown_a, shown_b)
        final = self.generator.complete(self.model_ref, user, self.params, system=judge_system,
                                        store_result=False)
        text = final.text if final is not None else ""
        parsed = parse_verdict(text, len(self.constitution.principles))
        if parsed is not None:
            return {**parsed, "method": "parsed", "text": text}
        lp = continuation_logprobs(self.generator, self.model_ref, user, judge_system,
                                   self.params)
        verdict = "A" if lp["A"] > lp["B"] else "B" if lp["B"] > lp["A"] else "tie"
        return {"verdict": verdict, "principle": None, "rationale": None, "method": "logprob",
                "logprobs": lp, "text": text}


def _as_candidate(verdict: str, swapped: bool) -> str:
    """A verdict on the shown sides → the choice in candidate order (a = candidates[0])."""
    if verdict == "tie":
        return "tie"
    choice = "a" if verdict == "A" else "b"
    return ("b" if choice == "a" else "a") if swapped else choice


def combine(first: dict, second: dict, on_inconsistent: str = "tie") -> tuple[str, bool]:
    """(choice, consistent) from the verdict in candidate order (`first`) and swapped."""
    one, two = _as_candidate(first["verdict"], False), _as_candidate(second["verdict"], True)
    if one == two:
        return one, True
    return on_inconsistent, False


def judge_task(judge: Judge, task: Any, on_inconsistent: str = "tie") -> dict:
    """Both verdicts on one task and the label they make (not stored)."""
    a, b = task.candidates[0]["output"], task.candidates[1]["output"]
    first = judge.verdict(task.prompt, task.system, a, b)
    second = judge.verdict(task.prompt, task.system, b, a)
    choice, consistent = combine(first, second, on_inconsistent)
    orders = [{"shown": "ab", **first, "choice": _as_candidate(first["verdict"], False)},
              {"shown": "ba", **second, "choice": _as_candidate(second["verdict"], True)}]
    principle = (first["principle"] or second["principle"]) if consistent else None
    if consistent:
        rationale = first["rationale"] or second["rationale"]
        if rationale is None and "logprob" in (first["method"], second["method"]):
            rationale = "log-probability of the verdict token (the judge's text had no verdict)"
    else:
        rationale = (f"position flip: shown a-first it chose {orders[0]['choice']}, shown "
                     f"b-first {orders[1]['choice']}")
    return {"choice": choice, "consistent": consistent, "principle": principle,
            "rationale": rationale, "orders": orders}


def judge_tasks(store: Any, generator: Any, judge_ref: str, task_set: str, *,
                constitution: str | Path | Constitution | None = None, limit: int | None = None,
                on_inconsistent: str = "tie", max_new_tokens: int = 64,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Judge every task of `task_set` the judge has not labelled yet (the first `limit`), each
    in both orders, and store one ``source="judge"`` label per task. Returns the counts."""
    if on_inconsistent not in ON_INCONSISTENT:
        raise JudgeError(f"on_inconsistent must be one of {', '.join(ON_INCONSISTENT)}, "
                         f"got {on_inconsistent!r}")
    if limit is not None and limit < 1:
        raise JudgeError("--limit must be at least 1")
    if not isinstance(constitution, Constitution):
        constitution = load_constitution(constitution)
    all_tasks = [t for t in store.list_label_tasks(task_set) if not is_repeat(t)
                 and len(t.candidates) >= 2]
    if not all_tasks:
        raise JudgeError(f"task set {task_set!r} has no label tasks; make some with "
                         "`tuneloop labels new`")
    open_ = [t for t in store.list_label_tasks(task_set, unlabelled_only=True, source="judge")
             if not is_repeat(t) and len(t.candidates) >= 2]
    todo = open_[:limit] if limit is not None else open_
    judge = Judge(generator, judge_ref, constitution, max_new_tokens)
    choices: Counter = Counter()
    methods: Counter = Counter()
    flips = 0
    for done, task in enumerate(todo, 1):
        result = judge_task(judge, task, on_inconsistent)
        detail = {"judge": judge.model_ref.ref, "constitution": constitution.path,
                  "constitution_sha256": constitution.sha256, "consistent": result["consistent"],
                  "on_inconsistent": on_inconsistent, "orders": result["orders"]}
        store.add_label(task.id, result["choice"], source="judge", principle=result["principle"],
                        rationale=result["rationale"], detail=detail)
        choices[result["choice"]] += 1
        methods.update(o["method"] for o in result["orders"])
        flips += not result["consistent"]
        if progress:
            progress(done, len(todo))
    return {"task_set": task_set, "judge": judge.model_ref.ref, "constitution": constitution.path,
            "judged": len(todo), "already_judged": len(all_tasks) - len(open_),
            "left": len(open_) - len(todo),
            "flips": flips, "flip_rate": flips / len(todo) if todo else None,
            "by_choice": dict(choices), "methods": dict(methods)}
