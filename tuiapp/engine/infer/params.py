"""What both generation backends share: parameters, the streamed chunk, sampling, chat rendering
and the incremental detokeniser that holds back text a stop string may still claim.

Sampling is ours (numpy over the last logits row) rather than each library's, so the same
parameters and seed pick the same tokens from the same logits in transformers and llama.cpp, and
a compare pane shows model differences, not sampler differences. No torch import here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class GenerationError(ValueError):
    """A generation that cannot run (bad parameters, wrong adapter, unreadable model), in words."""


@dataclass
class GenerationParams:
    """Sampling settings. temperature 0 is greedy (top_p and seed are then irrelevant)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()          # stop strings; the text ends before the first one
    chat: bool = True                   # False: the prompt is raw text, continued as is

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be a whole number ≥ 1 (got {self.max_new_tokens!r})")
        if self.temperature < 0:
            raise GenerationError(f"temperature must be ≥ 0 (got {self.temperature}); 0 means greedy")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1] (got {self.top_p})")
        self.stop = tuple(s for s in (self.stop or ()) if s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Chunk:
    """One streamed piece of an answer. The last chunk has done=True and carries the whole text
    and the figures: tokens generated, latency_s (call to end), first_token_s (call to first
    token), tokens_per_s (tokens / latency_s, prompt processing included) and finish_reason
    ("eos", "stop" for a stop string, "length", "cancelled")."""

    text: str
    done: bool = False
    tokens: int = 0
    latency_s: float | None = None
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class Sampler:
    """Greedy or temperature + top-p sampling from a logits row, seeded per generation."""

    def __init__(self, params: GenerationParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits, dtype=np.float64)
        if self.params.temperature == 0:
            return int(np.argmax(logits))
        z = logits / self.params.temperature
        z -= z.max()
        probs = np.exp(z)
        probs /= probs.sum()
        if self.params.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, self.params.top_p)) + 1]  # smallest nucleus
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self.rng.choice(len(probs), p=probs))


class TextStream:
    """Turns a growing list of token ids into safe-to-show text increments.

    ``decode`` maps ids to text. Text is held back while it ends in a partial UTF-8 character
    (shown as U+FFFD) or in a prefix of a stop string; ``push`` returns (new_text, stopped).
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self.decode = decode
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.shown = 0           # characters of the text already handed out
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        self.ids.append(token_id)
        text = self.decode(self.ids)
        for s in self.stop:
            at = text.find(s)
            if at != -1:
                self.text = text[:at]
                return self.flush(), True
        self.text = text
        safe = len(text)
        if text.endswith("\ufffd"):
            safe = len(text.rstrip("\ufffd"))
        for s in self.stop:  # hold back a tail that could still become a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        return self._take(safe), False

    def _take(self, upto: int) -> str:
        if upto <= self.shown:
            return ""
        piece = self.text[self.shown:upto]
        self.shown = upto
        return piece

    def flush(self) -> str:
        return self._take(len(self.text))


# ------------------------------------------------------------------ chat rendering

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def messages_for(prompt: str | list[dict], system: str | None = None) -> list[dict]:
    """A message list from a user prompt (plus optional system), or the given list as is."""
    if isinstance(prompt, list):
        msgs = [dict(m) for m in prompt]
        if system and not any(m.get("role") == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": system})
        return msgs
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": str(prompt)}]


def render_chat(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """Render a Hugging Face chat template the way transformers does (sandboxed jinja2,
    trim_blocks + lstrip_blocks). ``{% generation %}`` markers only matter for training masks,
    so they are dropped."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(_GENERATION_TAG.sub("", template))
        return compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:
        raise GenerationError(f"the chat template cannot render these messages: {exc}") from None


STOP_TOKEN_TEXTS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<|end|>")


# ------------------------------------------------------------------ the decode loop both backends share


def decode_loop(step, first_logits, prompt_len: int, stream: TextStream, stop_ids: set[int],
                 params: GenerationParams, t0: float, cancel, budget: int) -> Iterator[Chunk]:
    """The shared loop: sample from ``first_logits``, feed the token with ``step(token) ->
    logits``, stream text increments, finish with the figures."""
    sample = Sampler(params)
    logits, n, first_at, reason = first_logits, 0, None, "length"
    for _ in range(budget):
        if cancel is not None and cancel.is_set():
            reason = "cancelled"
            break
        token = sample(logits)
        if token in stop_ids:
            reason = "eos"
            break
        n += 1
        piece, stopped = stream.push(token)
        if first_at is None:
            first_at = time.perf_counter() - t0
        if piece:
            yield Chunk(piece, tokens=n)
        if stopped:
            reason = "stop"
            break
        if n < budget:
            logits = step(token)
    tail = stream.flush()
    if tail:
        yield Chunk(tail, tokens=n)
    latency = time.perf_counter() - t0
    yield Chunk(stream.text, done=True, tokens=n, latency_s=latency, first_token_s=first_at,
                tokens_per_s=n / latency if latency > 0 else None, finish_reason=reason,
                prompt_tokens=prompt_len)
