"""Pre-flight: the rows a trainer will leave out, or cut down to nothing, counted before the job runs.

Trainers lose rows quietly. TRL's DPO and KTO trainers drop every example whose tokenized prompt
alone fills ``max_length`` (truncation keeps the start, so nothing of the answer would remain);
its CPO/ORPO trainers (our simpo and orpo losses) keep such rows but with an empty completion;
the reward trainer drops every pair whose chosen or rejected sequence is longer than
``max_length``; our PPO cuts a long prompt's start to leave room for the answer; TRL's GRPO/RLOO
never cut prompts, so a long one runs past the ``max_length`` the memory estimate assumed. On
hh-rlhf at max_length 128 a DPO job went from 285 training rows to 108 without a word.

Here the prompts are tokenized the way each trainer does (the job's tokenizer and chat template,
``tools=`` included) and the rows that would be lost are counted: a warning gives the count, the
first line numbers and the setting to change; a refusal comes when no row would be left.
SFT's own case (truncation removing every assistant token) is measured by ``data.compute_stats``
and refused in ``preflight._check_data`` under ``assistant_only_loss``; without it such rows
still train, on their prompt only, which is warned about here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LISTED = 5  # line numbers quoted in a message (all of them go into report.tokens["dropped"])
PAIR_LOSSES_KEEPING_ROWS = ("simpo", "orpo")  # CPO/ORPO trainers: kept, with an empty completion


@dataclass
class Loss:
    """What one check found: which rows, what happens to them, and which setting helps."""

    rows: int                      # rows measured
    lines: list[int] = field(default_factory=list)
    happens: str = ""              # "are dropped by the DPO trainer: ..."
    knob: str = ""                 # "raise max_length (now 128; the longest prompt is 412 tokens)"
    fatal_when_all: bool = True    # no row left means nothing to train on
    longest: int = 0               # the longest measured length among the lost rows
    unrendered: int = 0            # rows the chat template failed on (not counted as lost)
    kept_labels: set = field(default_factory=set)  # KTO: labels of the rows that stay
    count: int | None = None       # rows lost when ``lines`` is only a sample of them

    @property
    def lost(self) -> int:
        return len(self.lines) if self.count is None else self.count


def check_dropped_rows(report: Any, config: Any, rep: Any, tokenizer: Any) -> None:
    """Add warnings (or a refusal) to ``report`` for the rows ``config``'s trainer would lose,
    and record them as ``report.tokens["dropped"]``. ``rep`` is the dataset's ValidationReport."""
    if tokenizer is None or not rep.records or not getattr(config, "max_length", None):
        return
    check_tool_rendering(report, config, rep, tokenizer)
    kind = config.kind
    if kind == "dpo":
        loss = _preference_prompts(config, rep, tokenizer)
    elif kind == "kto":
        loss = _kto_prompts(config, rep, tokenizer)
    elif kind == "reward":
        loss = _reward_pairs(config, rep, tokenizer)
    elif kind == "ppo":
        loss = _rl_prompts(config, rep, tokenizer, config.max_length - config.max_new_tokens,
                           cut=True)
    elif kind in ("grpo", "rloo"):
        loss = _rl_prompts(config, rep, tokenizer,
                           config.max_length - config.max_completion_length, cut=False)
    elif kind == "sft":
        loss = _sft_prompt_only(config, report)
    else:
        return
    if loss is not None:
        _add_findings(report, config, loss)


# ---------------------------------------------------------------- tool use


def check_tool_rendering(report: Any, config: Any, rep: Any, tokenizer: Any) -> None:
    """Refuse when rows carry tool calls or tool definitions the job's chat template leaves out
    (ChatML-style templates print ``content`` only): the model would learn the replies around
    calls it never sees. Measured on the first row of each sort: rendering it with and without
    the calls (or ``tools=``) must differ by the function's name."""
    call_row = next(((r, line) for r, line in zip(rep.records, rep.line_numbers, strict=True)
                     if any(m.get("tool_calls") for m in _conversation(r))), None)
    tools_row = next(((r, line) for r, line in zip(rep.records, rep.line_numbers, strict=True)
                      if _tools(r)), None)
    if call_row is None and tools_row is None:
        return
    which = ("the model's own chat template" if config.chat_template == "model"
             else f"chat_template={config.chat_template}")
    knob = ("use a base model whose chat template renders tool_calls and tools= (Qwen2.5, "
            "Llama 3.1, Hermes-style templates) with chat_template=model, or leave the tool rows out")
    try:
        if call_row is not None:
            record, line = call_row
            conv = _conversation(record)
            at = next(i for i, m in enumerate(conv) if m.get("tool_calls"))
            name = conv[at]["tool_calls"][0]["function"]["name"]
            bare = [{k: v for k, v in m.items() if k != "tool_calls"} if i == at else m
                    for i, m in enumerate(conv)]
            if not _adds(tokenizer, conv, bare, name, _tools(record)):
                report.refusals.append(
                    f"chat_template: {which} does not render tool calls (line {line}: the call to "
                    f"{name} disappears from the rendered conversation), so the model would learn "
                    f"the replies with the calls cut out; {knob}")
                return
        if tools_row is not None:
            record, line = tools_row
            tools = _tools(record)
            name = ((tools[0] or {}).get("function") or {}).get("name") or ""
            conv = _conversation(record)
            if name and not _adds(tokenizer, conv, conv, name, tools, without_tools=True):
                report.refusals.append(
                    f"chat_template: {which} does not render tool definitions (line {line}: the "
                    f"tools= list with {name} is left out of the rendered conversation), so the "
                    f"model would learn to call functions it was never shown; {knob}")
    except Exception as exc:  # noqa: BLE001 - a template that raises on tool turns, in words
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        report.refusals.append(f"chat_template: {which} fails on the tool-use rows ({first}); {knob}")


def _conversation(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole exchange of one row, in the message lists the trainers render."""
    if "messages" in record:
        return list(record["messages"])
    turns = _as_messages(record.get("prompt") or [], "user")
    reply = record.get("chosen", record.get("completion"))
    return turns + (_as_messages(reply, "assistant") if reply is not None else [])


def _adds(tokenizer: Any, full: list, bare: list, needle: str, tools: Any,
          without_tools: bool = False) -> bool:
    """Whether rendering ``full`` (with ``tools``) shows ``needle`` more often than ``bare``
    (without the calls, or without ``tools=``)."""
    def render(messages, tools_given):
        return tokenizer.apply_chat_template(messages, tokenize=False, tools=tools_given)

    with_text = render(full, tools)
    bare_text = render(bare, None if without_tools else tools)
    return with_text.count(needle) > bare_text.count(needle)


# ---------------------------------------------------------------- tokenizing as the trainers do


def _as_messages(value: Any, role: str) -> list[dict[str, Any]]:
    """String prompts and answers become one turn, as ``dpo.as_conversation`` does for training."""
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def _tools(record: dict[str, Any]):
    import json

    tools = record.get("tools")
    return json.loads(tools) if isinstance(tools, str) else (tools or None)


def _ids(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
         generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation through the chat template (TRL's ``_tokenize``)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, tools=tools,
                                        add_generation_prompt=generation_prompt)
    ids = out["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _prompt_len(tokenizer: Any, prompt: list, answers: list[list], tools: Any, limit: int) -> int:
    """Where the completion starts, as TRL finds it: the tokenized prompt, cut back to what it
    shares with every prompt+answer. Only prompts at least ``limit`` long need the full render."""
    prompt_ids = _ids(tokenizer, prompt, tools, generation_prompt=True)
    if len(prompt_ids) < limit:
        return len(prompt_ids)
    return min(_common_prefix(prompt_ids, _ids(tokenizer, prompt + a, tools)) for a in answers)


# ---------------------------------------------------------------- one check per trainer


def _preference_prompts(config: Any, rep: Any, tokenizer: Any) -> Loss:
    limit = config.max_length
    keeps = config.loss_type in PAIR_LOSSES_KEEPING_ROWS
    trainer = {"simpo": "CPO (simpo)", "orpo": "ORPO"}.get(config.loss_type, "DPO")
    happens = (f"keep no answer token in the {trainer} trainer (the prompt alone fills max_length "
               f"{limit}; they train on nothing)" if keeps else
               f"are dropped by the {trainer} trainer (the prompt alone fills max_length {limit})")
    loss = Loss(rows=len(rep.records), happens=happens)
    for record, line in zip(rep.records, rep.line_numbers, strict=True):
        prompt = _as_messages(record["prompt"], "user")
        answers = [_as_messages(record[k], "assistant") for k in ("chosen", "rejected")]
        n = _measure(loss, _prompt_len, tokenizer, prompt, answers, _tools(record), limit)
        if n is not None and n >= limit:
            _lost(loss, line, n)
    loss.knob = _raise_knob(limit, loss.longest + 1, "prompt")
    return loss


def _kto_prompts(config: Any, rep: Any, tokenizer: Any) -> Loss:
    limit = config.max_length
    loss = Loss(rows=len(rep.records), happens=f"are dropped by the KTO trainer (the prompt alone "
                                               f"fills max_length {limit})")
    for record, line in zip(rep.records, rep.line_numbers, strict=True):
        prompt = _as_messages(record["prompt"], "user")
        answer = _as_messages(record["completion"], "assistant")
        n = _measure(loss, _prompt_len, tokenizer, prompt, [answer], _tools(record), limit)
        if n is not None and n >= limit:
            _lost(loss, line, n)
        else:
            loss.kept_labels.add(bool(record.get("label")))
    loss.knob = _raise_knob(limit, loss.longest + 1, "prompt")
    return loss


def _reward_pairs(config: Any, rep: Any, tokenizer: Any) -> Loss:
    limit = config.max_length
    loss = Loss(rows=len(rep.records), happens=f"are dropped by the reward trainer (chosen or "
                                               f"rejected is longer than max_length {limit})")
    for record, line in zip(rep.records, rep.line_numbers, strict=True):
        prompt = _as_messages(record["prompt"], "user")
        answers = [_as_messages(record[k], "assistant") for k in ("chosen", "rejected")]
        n = _measure(loss, _longest_pair, tokenizer, prompt, answers, _tools(record))
        if n is not None and n > limit:
            _lost(loss, line, n)
    loss.knob = _raise_knob(limit, loss.longest, "pair")
    return loss


def _rl_prompts(config: Any, rep: Any, tokenizer: Any, budget: int, cut: bool) -> Loss:
    """PPO keeps a prompt's last ``max(8, budget)`` tokens; GRPO/RLOO keep the whole prompt and
    so run past max_length. Either way the rows still train: a warning, never a refusal."""
    from tuiapp.engine.train.reward_sources import _prompt_messages  # what the RL jobs prompt with

    answer = "max_new_tokens" if config.kind == "ppo" else "max_completion_length"
    room = max(8, budget) if cut else budget
    happens = (f"have their start cut by PPO (max_length {config.max_length} − {answer} "
               f"{getattr(config, answer)} leaves {room} prompt tokens)" if cut else
               f"run past max_length {config.max_length} (prompt + {answer} "
               f"{getattr(config, answer)}): {config.kind.upper()} does not cut prompts, so these "
               "sequences are longer than the memory estimate assumed")
    loss = Loss(rows=len(rep.records), happens=happens, fatal_when_all=False)
    for record, line in zip(rep.records, rep.line_numbers, strict=True):
        messages = _prompt_messages(record)
        if not messages or messages[-1].get("role") != "user":
            continue  # not a prompt the job will use (load_prompts skips it too)
        n = _measure(loss, _rl_prompt_tokens, tokenizer, messages)
        if n is not None and n > room:
            _lost(loss, line, n)
    extra = config.max_length + loss.longest - room
    covers = "keeps the longest prompt whole" if cut else \
        "makes the memory estimate cover the longest prompt"
    loss.knob = (f"raise max_length (now {config.max_length}; {extra} {covers}) or lower "
                 f"{answer}, or shorten those prompts")
    return loss


def _longest_pair(tokenizer: Any, prompt: list, answers: list[list], tools: Any) -> int:
    """The reward trainer tokenizes prompt+chosen and prompt+rejected whole, no generation prompt."""
    return max(len(_ids(tokenizer, prompt + a, tools)) for a in answers)


def _rl_prompt_tokens(tokenizer: Any, messages: list[dict[str, Any]]) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _sft_prompt_only(config: Any, report: Any) -> Loss | None:
    """Rows whose every assistant token is past max_length (``compute_stats`` measured them). Under
    assistant_only_loss preflight refuses them already; without it they train on the prompt."""
    if getattr(config, "assistant_only_loss", True):
        return None
    nothing = (report.tokens or {}).get("train_on_nothing") or {}
    if not nothing.get("count"):
        return None
    rows = (report.tokens or {}).get("rows") or report.dataset_rows or 0
    return Loss(rows=rows, lines=list(nothing.get("lines") or []), count=int(nothing["count"]),
                fatal_when_all=False,  # stats list at most 20 of the lines
                happens=f"lose every assistant token to truncation at max_length "
                        f"{config.max_length} (they train on the prompt alone)",
                knob=f"raise max_length (now {config.max_length}) or shorten those conversations")


# ---------------------------------------------------------------- bookkeeping and messages


def _measure(loss: Loss, fn, *args) -> int | None:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - a template that fails on a row is counted and said once
        loss.unrendered += 1
        return None


def _lost(loss: Loss, line: int, length: int) -> None:
    loss.lines.append(line)
    loss.longest = max(loss.longest, length)


def _raise_knob(limit: int, needed: int, what: str) -> str:
    return (f"raise max_length (now {limit}; {needed} keeps the longest {what}) or shorten "
            f"those {what}s")


def _add_findings(report: Any, config: Any, loss: Loss) -> None:
    count = loss.lost
    if loss.unrendered:
        report.warnings.append(f"dataset: the chat template failed on {loss.unrendered} row(s); "
                               "they were not measured for truncation")
    if not count:
        return
    report.tokens = dict(report.tokens or {})
    report.tokens["dropped"] = {"count": count, "rows": loss.rows, "lines": loss.lines,
                                "reason": loss.happens, "knob": loss.knob}
    shown = ", ".join(map(str, loss.lines[:LISTED])) + (", …" if count > LISTED else "")
    share = count / loss.rows * 100 if loss.rows else 100.0
    left = loss.rows - count
    if loss.fatal_when_all and left <= 0:
        report.refusals.append(f"dataset: all {count} rows {loss.happens}: nothing would be left "
                               f"to train on (lines {shown}); {loss.knob}")
        return
    if config.kind == "kto" and loss.fatal_when_all and len(loss.kept_labels) == 1:
        only = "desirable" if loss.kept_labels == {True} else "undesirable"
        report.refusals.append(f"dataset: {count} of {loss.rows} rows {loss.happens} and the "
                               f"{left} left are all {only}: KTO needs both labels (lines "
                               f"{shown}); {loss.knob}")
        return
    rest = f"{left} remain" if "dropped" in loss.happens else f"the other {left} fit"
    report.warnings.append(f"dataset: {count} of {loss.rows} rows ({share:.1f}%) {loss.happens}; "
                           f"{rest} (lines {shown}); {loss.knob}")
