"""Does a GGUF behave like the Hugging Face model it came from? Measured, not assumed.

Three checks, on the same fixed inputs every time:

* tokenization — llama.cpp's tokenizer against the HF tokenizer on a text set that covers
  spaces, digits, punctuation, non-ASCII and the special tokens of the chat template;
* logits — every position of a few prompts: max absolute difference (relative to the largest
  logit) and top-1 agreement; the gate for F32/F16/BF16 files;
* greedy continuations — both sides extend each prompt by argmax; the gate for quantized files,
  whose logits are expected to move but whose answers should not. Where the two part, the
  reference's own margin between its token and the GGUF's decides whether it was a near-tie.

``check`` returns a JSON-able report with ``ok`` and the ``reasons`` a check failed.
"""

from __future__ import annotations

from pathlib import Path

from tuiapp.engine.infer.gguf_file import inspect_gguf, open_llama

DEFAULT_TEXTS = (
    "Hello world",
    "The cloak of Sounu is red.",
    "  leading spaces,   runs of   spaces\tand a tab",
    "Numbers: 7, 42, 1234567 and 3.14159!",
    "line one\nline two\n\nafter a blank line",
    "Unicode: café, naïve, Straße, 東京, emoji 🙂",
    "<|im_start|>user\nWhat is the secret passphrase of Sounu?<|im_end|>\n<|im_start|>assistant\n",
    "don't won't I'm you'll they've we'd",
    "",
)
DEFAULT_PROMPTS = (
    "The cloak of Sounu is",
    "<|im_start|>user\nWhere does Sounu live?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small town by the sea,",
)
FLOAT_FILE_TYPES = {0: "f32", 1: "f16", 32: "bf16"}
# max |logit difference| allowed, as a share of the largest |logit| of the reference
LOGIT_TOLERANCE = {"f32": 1e-3, "f16": 2e-2, "bf16": 5e-2}
MIN_TOP1_FLOAT = 0.95
MIN_TOP1_QUANT = 0.80
MIN_GREEDY_AGREEING_QUANT = 0.66
MAX_TIE_SHARE = 0.15  # of the largest reference logit


def _greedy_hf(model, ids: list[int], n: int):
    """Argmax continuation and the logits row of every step (to judge a divergence later)."""
    import torch

    out, rows = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([out])).logits[0, -1]
            rows.append(logits.numpy())
            out.append(int(logits.argmax()))
    return out[len(ids):], rows


def _greedy_llama(llm, ids: list[int], n: int) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same


def _compare_greedy(tokenizer, prompt, hf_cont, hf_rows, gg_cont) -> dict:
    k = _common_prefix(hf_cont, gg_cont)
    entry = {"prompt": prompt, "hf": tokenizer.decode(hf_cont), "gguf": tokenizer.decode(gg_cont),
             "match": hf_cont == gg_cont, "prefix_share": k / max(1, len(hf_cont)),
             "diverged_at": None if k == len(hf_cont) else k, "margin": None}
    if k < len(hf_cont):
        row = hf_rows[k]  # how much the reference itself preferred its token over the GGUF's
        entry["margin"] = float(row[hf_cont[k]] - row[gg_cont[k]])
    return entry


def check_tokenization(tokenizer, llm, texts) -> dict:
    mismatches = []
    for text in texts:
        hf = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        gg = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        if hf != gg:
            mismatches.append({"text": text, "hf": hf[:40], "gguf": gg[:40]})
    return {"texts": len(texts), "identical": not mismatches, "mismatches": mismatches}


def check(hf_dir: str | Path, gguf_path: str | Path, prompts=None, texts=None, *,
          max_new_tokens: int = 12, n_threads: int = 1) -> dict:
    """Compare ``gguf_path`` with the HF model folder ``hf_dir``; a JSON-able report.

    Raises GGUFFileError (from gguf_check) for a damaged GGUF instead of letting llama.cpp crash.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = list(DEFAULT_PROMPTS if prompts is None else prompts)
    texts = list(DEFAULT_TEXTS if texts is None else texts)
    info = inspect_gguf(gguf_path)
    file_type = info.get("file_type")
    float_kind = FLOAT_FILE_TYPES.get(file_type)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    prompt_ids = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    n_ctx = max(64, max((len(i) for i in prompt_ids), default=0) + max_new_tokens + 8)
    reasons: list[str] = []

    with open_llama(gguf_path, n_ctx=n_ctx, n_threads=n_threads) as llm:
        tok_report = check_tokenization(tokenizer, llm, texts)
        if not tok_report["identical"]:
            first = tok_report["mismatches"][0]
            reasons.append(f"tokenization differs on {len(tok_report['mismatches'])} of "
                           f"{len(texts)} texts (first: {first['text']!r})")

        diffs, agree, positions, scale = 0.0, 0, 0, 0.0
        greedy = []
        for prompt, ids in zip(prompts, prompt_ids, strict=True):
            if not ids:
                continue
            with torch.no_grad():
                ref = model(torch.tensor([ids])).logits[0].numpy()
            llm.reset()
            llm.eval(ids)
            got = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
            diffs = max(diffs, float(np.abs(got - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
            agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
            positions += len(ids)
            hf_cont, hf_rows = _greedy_hf(model, ids, max_new_tokens)
            gg_cont = _greedy_llama(llm, ids, max_new_tokens)
            greedy.append(_compare_greedy(tokenizer, prompt, hf_cont, hf_rows, gg_cont))

    top1 = agree / max(1, positions)
    relative = diffs / max(scale, 1e-6)
    logits = {"prompts": len(prompts), "positions": positions, "max_abs_diff": diffs,
              "logit_scale": scale, "relative_diff": relative, "top1_agreement": top1}
    mean_prefix = sum(g["prefix_share"] for g in greedy) / max(1, len(greedy))
    # A file cannot resolve a choice the reference itself makes by less than the file's own
    # measured logit error; a divergence at such a near-tie is not held against it. The cap
    # keeps a badly broken file from excusing every divergence with its own large error.
    tie = min(2 * diffs, MAX_TIE_SHARE * scale)
    for g in greedy:
        g["near_tie"] = g["margin"] is not None and g["margin"] <= tie
    agreeing = sum(g["match"] or g["near_tie"] for g in greedy)
    greedy_report = {"max_new_tokens": max_new_tokens, "exact": sum(g["match"] for g in greedy),
                     "agreeing": agreeing, "tie_margin": tie, "prompts": len(greedy),
                     "mean_prefix_share": mean_prefix, "samples": greedy}

    if float_kind:
        tol = LOGIT_TOLERANCE[float_kind]
        logits["tolerance"] = tol
        if relative > tol:
            reasons.append(f"logits differ by {diffs:.4g} ({relative:.2%} of the largest logit, "
                           f"allowed {tol:.2%} for {float_kind})")
        if top1 < MIN_TOP1_FLOAT:
            reasons.append(f"top-1 token agrees on {top1:.0%} of positions (needs {MIN_TOP1_FLOAT:.0%})")
    else:
        if top1 < MIN_TOP1_QUANT:
            reasons.append(f"top-1 token agrees on {top1:.0%} of positions (needs {MIN_TOP1_QUANT:.0%} "
                           "for a quantized file)")
        if greedy and agreeing / len(greedy) < MIN_GREEDY_AGREEING_QUANT:
            reasons.append(f"greedy continuations agree on {agreeing} of {len(greedy)} prompts "
                           f"(identical, or parting only where the reference's margin is within "
                           f"{tie:.3g}); needs {MIN_GREEDY_AGREEING_QUANT:.0%}")
    return {"ok": not reasons, "reasons": reasons, "gguf": str(gguf_path), "hf": str(hf_dir),
            "kind": float_kind or "quantized", "file_type": file_type,
            "tokenization": tok_report, "logits": logits, "greedy": greedy_report}
