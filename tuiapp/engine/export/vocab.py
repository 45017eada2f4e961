"""Tokenizer metadata for a GGUF file, read from a Hugging Face ``tokenizer.json``.

Byte-level BPE (GPT-2, Llama-3, Qwen2 style) becomes ``tokenizer.ggml.model = "gpt2"`` with the
token strings, token types, merges and a pre-tokenizer name that llama.cpp knows. llama.cpp has no
regex of its own for an unknown name, so a pre-tokenizer we cannot name is refused rather than
silently tokenised differently.

SentencePiece-style BPE (Llama-2, Mistral-7B-v0.1: byte fallback, "▁" for spaces) becomes
``tokenizer.ggml.model = "llama"``: llama.cpp's SPM tokenizer merges, anywhere in the text, the
adjacent pair whose joined text is a token with the highest score, so each token's score is minus
the rank of the merge that makes it (earlier merges win, as in BPE); byte tokens ``<0xXX>`` are
typed BYTE for the fallback. Accepted layouts: the legacy Prepend("▁") + Replace(" ", "▁")
normalizer (which llama.cpp's add_space_prefix reproduces exactly) and Metaspace with
prepend_scheme "never"; Metaspace "first"/"always" skips its "▁" before a leading space, which
llama.cpp cannot reproduce, so it is refused in words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Split regexes of the byte-level tokenizers llama.cpp implements, keyed by llama.cpp's name.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_KNOWN_SPLITS = {_LLAMA3_REGEX: "llama-bpe", _QWEN2_REGEX: "qwen2"}

# transformers-only template tags (assistant-token masks); llama.cpp's Jinja does not know them
# and they render nothing, so they are dropped from the template written into the GGUF.
_GENERATION_TAGS = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class VocabError(ValueError):
    """The tokenizer cannot be written so that llama.cpp tokenises like Hugging Face."""


@dataclass
class Vocab:
    model: str                                  # "gpt2" | "llama"
    pre: str | None
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    special: dict[str, int] = field(default_factory=dict)   # bos/eos/pad/unk -> id
    add_bos: bool = False
    add_eos: bool = False
    write_add_eos: bool = True                  # the reference leaves it out unless it is known
    add_space_prefix: bool | None = None        # SPM only: "▁" before the text
    chat_template: str | None = None


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _pre_tokenizer_name(pre: dict | None, path: Path) -> str:
    """Name the pre-tokenizer llama.cpp must use, or refuse with what was found."""
    if not pre:
        raise VocabError(f"{path}: the tokenizer has no pre-tokenizer; llama.cpp needs a known one.")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            raise VocabError(f"{path}: ByteLevel pre-tokenizer with add_prefix_space=true is not "
                             "supported by llama.cpp's gpt2 tokenizer.")
        return "gpt-2"  # ByteLevel's built-in regex is GPT-2's
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        splits = [s for s in steps if s.get("type") == "Split"]
        rest = [s for s in steps if s.get("type") not in ("Split", "ByteLevel")]
        digits = [s for s in rest if s.get("type") == "Digits" and s.get("individual_digits")]
        byte_level = [s for s in steps if s.get("type") == "ByteLevel" and s.get("use_regex", True)]
        if len(steps) == 2 and digits and byte_level:
            return "smollm"  # one digit per pre-token, then GPT-2's regex: llama.cpp's "smollm"
        if len(splits) == 1 and not rest:
            pattern = splits[0].get("pattern", {})
            regex = pattern.get("Regex") or pattern.get("String")
            if regex in _KNOWN_SPLITS:
                return _KNOWN_SPLITS[regex]
            raise VocabError(f"{path}: unknown pre-tokenizer regex {regex!r}; llama.cpp would "
                             "split text differently. Known: GPT-2, Llama-3, Qwen2.")
    raise VocabError(f"{path}: unsupported pre-tokenizer {json.dumps(pre)[:200]}; known: GPT-2 "
                     "ByteLevel, Llama-3 and Qwen2 splits.")


def _special_flags(tokenizer_file: Path, special: dict[str, int]) -> tuple[bool, bool]:
    """Does encoding add BOS / EOS? Asked of the tokenizer itself, not guessed from config."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    plain = tok.encode("hello", add_special_tokens=False).ids
    full = tok.encode("hello", add_special_tokens=True).ids
    add_bos = len(full) > len(plain) and "bos" in special and full[0] == special["bos"]
    add_eos = len(full) > len(plain) and "eos" in special and full[-1] == special["eos"]
    return add_bos, add_eos


def read_chat_template(folder: Path, config: dict) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def load_vocab(folder: str | Path, vocab_size: int, config_json: dict | None = None) -> Vocab:
    """Read tokenizer.json + tokenizer_config.json of a model folder into GGUF vocab fields.

    ``vocab_size`` is the model's embedding row count; missing ids are padded as unused tokens,
    as llama.cpp requires one token per embedding row.
    """
    folder = Path(folder)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.exists():
        raise VocabError(f"{folder}: no tokenizer.json; save the tokenizer with the model "
                         "(tokenizer.save_pretrained) before exporting.")
    data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise VocabError(f"{tokenizer_file}: tokenizer model {model.get('type')!r} is not supported "
                         "(only BPE: byte-level or SentencePiece-style).")

    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    n = max(vocab_size, max(by_id) + 1)
    if n > vocab_size:
        raise VocabError(f"{tokenizer_file}: the tokenizer has ids up to {max(by_id)} but the model "
                         f"has only {vocab_size} embedding rows; resize the embeddings first.")

    spm = bool(model.get("byte_fallback"))
    add_space_prefix = _spm_layout(data, tokenizer_file) if spm else None
    unk = model.get("unk_token")
    tokens, types = [], []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif spm and _BYTE_TOKEN.fullmatch(text):  # in the vocab or added: the fallback bytes
            tokens.append(text)
            types.append(BYTE)
        elif spm and text == unk:
            tokens.append(text)
            types.append(UNKNOWN)
        elif i in added:
            tokens.append(text)
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        else:
            tokens.append(text)
            types.append(NORMAL)

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ids = {t: i for i, t in by_id.items()}
    scores = _spm_scores(merges, ids, n) if spm else None
    special: dict[str, int] = {}
    for key in ("bos", "eos", "pad", "unk"):
        text = _token_text(tok_cfg.get(f"{key}_token"))
        if text is not None and text in ids:
            special[key] = ids[text]
    config_json = config_json or {}
    if "bos" not in special and isinstance(config_json.get("bos_token_id"), int):
        special["bos"] = config_json["bos_token_id"]
    if "eos" not in special and isinstance(config_json.get("eos_token_id"), int):
        special["eos"] = config_json["eos_token_id"]
    add_bos, add_eos = _special_flags(tokenizer_file, special)
    template = read_chat_template(folder, tok_cfg)
    if template:
        template = _GENERATION_TAGS.sub("", template)

    if spm:
        return Vocab("llama", None, tokens, types, scores=scores, special=special,
                     add_bos=add_bos, add_eos=add_eos, add_space_prefix=add_space_prefix,
                     chat_template=template)
    pre = _reference_pre_name(data.get("pre_tokenizer"), tokenizer_file)
    post = (data.get("post_processor") or {}).get("type")
    write_add_eos = add_eos or post == "ByteLevel" or "add_eos_token" in tok_cfg
    return Vocab("gpt2", pre, tokens, types, merges=merges, special=special,
                 add_bos=add_bos, add_eos=add_eos, write_add_eos=write_add_eos,
                 chat_template=template)


def _reference_pre_name(pre: dict | None, tokenizer_file: Path) -> str:
    """The name llama.cpp's converter would write where it knows this tokenizer (it names by a
    hash of the ids of a fixed text, so e.g. SmolLM's plain ByteLevel becomes "smollm"), else
    the one read from the tokenizer.json regex."""
    from tuiapp.engine.export.reference import ConverterError, pre_tokenizer_by_hash

    try:
        own = _pre_tokenizer_name(pre, tokenizer_file)
    except VocabError as exc:
        own, refusal = None, exc
    try:
        by_hash = pre_tokenizer_by_hash(tokenizer_file)
    except ConverterError:
        by_hash = None
    if by_hash:
        return by_hash
    if own is None:
        raise refusal
    return own


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _spm_layout(data: dict, path: Path) -> bool:
    """Whether text gets a leading "▁" (llama.cpp's add_space_prefix), for the two ways
    transformers writes a SentencePiece BPE; anything else is refused."""
    norm, pre = data.get("normalizer"), data.get("pre_tokenizer")
    steps = (norm or {}).get("normalizers", [norm] if norm else [])
    kinds = [st.get("type") for st in steps]
    replaces_space = any(st.get("type") == "Replace" and st.get("content") == "▁"
                         and (st.get("pattern") or {}).get("String") == " " for st in steps)
    if pre is None and replaces_space and set(kinds) <= {"Prepend", "Replace"}:
        return "Prepend" in kinds  # Llama-2 / Mistral v0.1 ("legacy")
    if pre and pre.get("type") == "Metaspace" and not norm and pre.get("replacement") == "▁" \
            and pre.get("split") is False:
        if pre.get("prepend_scheme") == "never":
            return False
        # Metaspace prepends "▁" only when the text does not already start with one; llama.cpp
        # always does, so "  x" would tokenise differently (measured: 1 of 9 parity texts).
        raise VocabError(f"{path}: Metaspace pre-tokenizer with prepend_scheme "
                         f"{pre.get('prepend_scheme', 'always')!r}: llama.cpp adds its '▁' even "
                         "before a leading space, this tokenizer does not, so text starting with a "
                         "space would tokenise differently. Supported SentencePiece layouts: the "
                         "legacy Prepend+Replace normalizer, or Metaspace with prepend_scheme never.")
    raise VocabError(f"{path}: SentencePiece-style tokenizer with normalizer {json.dumps(norm)[:120]} "
                     f"and pre-tokenizer {json.dumps(pre)[:120]}: llama.cpp's SPM tokenizer only "
                     "replaces spaces with '▁' (and may prepend one); other layouts would tokenise "
                     "differently.")


def _spm_scores(merges: list[str], ids: dict[str, int], n: int) -> list[float]:
    """Minus the merge rank of each merged token (the first merge making a token counts);
    single characters, bytes and special tokens score 0 — llama.cpp only reads the score of the
    token a merge would create."""
    scores = [0.0] * n
    seen: set[int] = set()
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1)
        i = ids.get(left + right)
        if i is not None and i not in seen:
            seen.add(i)
            scores[i] = -float(rank + 1)
    return scores


def write_vocab(writer, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    # BPE files with no BOS of their own still need a valid id, or llama.cpp picks token 11.
    bos = vocab.special.get("bos", vocab.special.get("pad", vocab.special.get("eos")))
    if bos is not None:
        writer.add_bos_token_id(bos)
    if "eos" in vocab.special:
        writer.add_eos_token_id(vocab.special["eos"])
    if "pad" in vocab.special:
        writer.add_pad_token_id(vocab.special["pad"])
    if "unk" in vocab.special:
        writer.add_unk_token_id(vocab.special["unk"])
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.write_add_eos:
        writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
