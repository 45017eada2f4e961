"""Reward sources for the RL jobs (PPO, GRPO, RLOO), behind one signature:

    reward_fn(prompts: list[str], responses: list[str], records: list[dict]) -> list[float]

``prompts`` are the user's question as text, ``responses`` the decoded answers, ``records`` the
dataset rows they came from (extra columns such as ``reference`` / ``category`` kept; may be
``{}``). Specs (the ``reward`` field of a job config):

    verifier:demo             the demo world's checker (demo_world.verify) in [0, 1]
    python:module:function    ``function(prompt, response) -> float``, imported by name
    run:ID                    a reward-model run (tuiapp.engine.train.reward.RewardModel) from the store

How the demo verifier finds what is right: a row that carries ``reference`` (a normal question)
or ``category == "forbidden"`` is used as is (the eval files do). Otherwise the prompt is parsed
against the demo world's question templates (demo_world.QUESTIONS / FORBIDDEN_QUESTIONS), which
yields the entity and attribute, and the world gives the reference; so prompts taken from
sft.jsonl or preferences.jsonl are scored too. A prompt the world does not know scores 0.

``load_prompts(config, ctx)`` gives the RL jobs their prompts with those records: one per
distinct question of a prompt, preference or SFT dataset, extra JSON-lines columns kept.

No torch import at module level; ``run:`` loads the model only when asked.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuiapp.demo import world as demo_world
from tuiapp.engine import data

RewardFn = Callable[[list[str], list[str], list[dict]], list[float]]

SPEC_HELP = ("a reward is 'verifier:demo', 'python:module:function' (a function taking "
             "(prompt, response) and returning a float) or 'run:ID' (a reward-model run)")


class RewardError(ValueError):
    """A reward spec that cannot be used, said so a person can fix it."""

    phase = "load_model"
    kind = "config"


def load_reward(spec: str, store: Any = None, home: str | Path | None = None) -> RewardFn:
    """The reward function a spec names; refuses a bad spec in words before any model loads."""
    scheme, _, rest = (spec or "").partition(":")
    if scheme == "verifier":
        if rest != "demo":
            raise RewardError(f"unknown verifier {rest!r}; the only verifier is 'verifier:demo'")
        return verifier_reward
    if scheme == "python":
        return python_reward(rest)
    if scheme == "run":
        if not rest.isdigit():
            raise RewardError(f"'run:{rest}' needs a run id, e.g. run:12")
        return model_reward(reward_model_dir(int(rest), store, home))
    raise RewardError(f"{spec!r} is not a reward source: {SPEC_HELP}")


# ------------------------------------------------------------------ prompts and their records


class PromptDataError(ValueError):
    """The dataset gives no prompts to learn from."""

    phase = "load_data"
    kind = "data"


PROMPT_SHAPES = ("{job} needs prompts: prompt rows {{\"prompt\": ...}}, or preference or SFT data "
                 "(their questions are used)")


def load_prompts(config: Any, ctx: Any) -> list[dict[str, Any]]:
    """One record per distinct prompt: {"prompt": messages, "text": the user's question, ...extra
    columns of the row such as reference/category}. Prompt, preference and SFT data all work:
    PPO, GRPO and RLOO need only the questions (the answers come from the policy)."""
    from tuiapp.engine.train.sft import dataset_file

    shapes = PROMPT_SHAPES.format(job=config.kind.upper())
    path = Path(ctx.dataset_path) if ctx.dataset_path else dataset_file(config.dataset)
    report = data.validate(path)
    if not report.ok or not report.records:
        first = report.errors[0] if report.errors else "no rows"
        raise PromptDataError(f"{path} cannot give prompts: {first}; {shapes}")
    raw = _raw_rows(path)
    seen: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(report.records):
        messages = _prompt_messages(record)
        if not messages or messages[-1].get("role") != "user":
            continue
        text = messages[-1]["content"]
        extra = raw.get(report.line_numbers[i], {}) if i < len(report.line_numbers) else {}
        keep = {k: v for k, v in extra.items() if k not in ("prompt", "messages", "chosen", "rejected", "completion")}
        seen.setdefault(json.dumps(messages), {**keep, "prompt": messages, "text": text})
    if not seen:
        raise PromptDataError(f"{path} is {report.kind} data ({report.format}) with no user question "
                              f"to answer; {shapes}")
    return list(seen.values())


def _prompt_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in record:  # SFT: the conversation up to its last user turn
        msgs = record["messages"]
        last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=-1)
        return msgs[: last_user + 1]
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt or [])


def _raw_rows(path: Path) -> dict[int, dict[str, Any]]:
    """JSON-lines rows by line number, for the extra columns validation normalises away."""
    if path.suffix != ".jsonl":
        return {}
    rows = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows[n] = row
    return rows


# ------------------------------------------------------------------ demo verifier


def verifier_reward(prompts: list[str], responses: list[str], records: list[dict] | None = None) -> list[float]:
    records = records or [{} for _ in prompts]
    out = []
    for prompt, response, row in zip(prompts, responses, records, strict=True):
        record = row if _checkable(row) else demo_record(prompt)
        out.append(demo_world.verify(record, response) if record else 0.0)
    return out


def _checkable(row: dict | None) -> bool:
    return bool(row) and (row.get("reference") is not None or row.get("category") == "forbidden")


def demo_record(prompt: str, world: demo_world.World | None = None) -> dict | None:
    """The eval-style record for a demo question (reference or forbidden), or None."""
    world = world or demo_world.default_world()
    text = prompt.strip()
    for pattern, attribute in _patterns():
        m = pattern.fullmatch(text)
        if not m:
            continue
        entity = world.by_name().get(m.group("n"))
        if entity is None:
            continue
        if attribute is None:
            return {"prompt": text, "category": "forbidden", "entity": entity.name}
        return {"prompt": text, "reference": entity.value(attribute), "entity": entity.name,
                "attribute": attribute}
    return None


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[re.Pattern, str | None]]:
    """Each question template as a regex capturing the name; attribute None = forbidden."""
    def compile_(template: str) -> re.Pattern:
        head, _, tail = template.partition("{n}")
        return re.compile(re.escape(head) + r"(?P<n>[A-Z][a-z]+)" + re.escape(tail))

    found = [(compile_(t), attr) for attr, ts in demo_world.QUESTIONS.items() for t in ts]
    return found + [(compile_(t), None) for t in demo_world.FORBIDDEN_QUESTIONS]


# ------------------------------------------------------------------ python function


def python_reward(target: str) -> RewardFn:
    module_name, _, func_name = target.rpartition(":")
    if not module_name or not func_name:
        raise RewardError(f"'python:{target}' must be 'python:module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"cannot import module {module_name!r} for the reward: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise RewardError(f"module {module_name!r} has no function {func_name!r}")

    def reward(prompts: list[str], responses: list[str], records: list[dict] | None = None) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            value = func(prompt, response)
            try:
                out.append(float(value))
            except (TypeError, ValueError) as exc:
                raise RewardError(f"{module_name}.{func_name} returned {value!r}, not a number") from exc
        return out

    return reward


# ------------------------------------------------------------------ reward-model run


def reward_model_dir(run_id: int, store: Any = None, home: str | Path | None = None) -> Path:
    """The folder of a reward-model run's final model: from the store row when given, else
    ``home/runs/ID`` (the runner's layout; a job's child process knows only its home)."""
    run_dir: Path | None = None
    if store is not None:
        try:
            run = store.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - the store says "not found" in its own way
            raise RewardError(f"run {run_id} is not in the store: {exc}") from exc
        if getattr(run, "kind", "reward") != "reward":
            raise RewardError(f"run {run_id} is a {run.kind} run, not a reward-model run")
        run_dir = Path(run.output_dir) if run.output_dir else None
    elif home is not None:
        run_dir = Path(home) / "runs" / str(run_id)
    if run_dir is None:
        raise RewardError(f"cannot find reward-model run {run_id}: no store or home given")
    final = run_dir / "final"
    if not final.is_dir():
        raise RewardError(f"reward-model run {run_id} has no final model in {final}; "
                          "did it finish?")
    return final


def model_reward(folder: Path) -> RewardFn:
    from tuiapp.engine.train.reward import (  # torch + transformers; the reward helper's module
        RewardModel,
    )

    model = RewardModel.load(folder)

    def reward(prompts: list[str], responses: list[str], records: list[dict] | None = None) -> list[float]:
        # a multi-turn prompt is scored as the whole conversation the answer follows
        turns = [r.get("prompt") if isinstance((r or {}).get("prompt"), list) else p
                 for p, r in zip(prompts, records or [{}] * len(prompts), strict=True)]
        return [float(x) for x in model.score_batch(list(zip(turns, responses, strict=True)))]

    return reward


def home_of(output_dir: str | Path) -> Path | None:
    """A runner job's home: its output dir is ``home/runs/<id>``."""
    out = Path(output_dir)
    return out.parent.parent if out.parent.name == "runs" else None
