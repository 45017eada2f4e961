"""Which program writes the float (f32/f16/bf16) GGUF of an export, and the check that it can.

llama.cpp's own converter (``reference.convert``) when one is set up for the installed
llama-cpp-python (``tuneloop export setup-converter``): it converts every architecture the
compiled llama.cpp runs. Without it, tuneloop's own writer (``gguf.write_gguf``: Llama, Mistral,
Qwen2). ``choose_writer`` picks and ``check_architecture`` refuses in words, from config.json
alone, so a model neither can convert is refused in the plan, before a merge loads anything.

The converter copies the chat template as the folder has it; transformers-only
``{% generation %}`` tags (assistant masks) would break llama.cpp's and llama-cpp-python's Jinja,
so a folder with them is converted through a staging folder whose template has them removed
(the weights are linked, not copied), the same template our own writer writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuiapp.engine.export import reference
from tuiapp.engine.export.gguf import ARCHITECTURES, GGUFExportError, read_config, write_gguf

OWN = "tuneloop"
# rewritten in the staging folder; everything else is linked
_TEMPLATE_FILES = ("tokenizer_config.json", "chat_template.jinja", "chat_template.json")
# shown first in "e.g." lists: the families people ask about
_EXAMPLES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
             "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM")


@dataclass(frozen=True)
class Writer:
    name: str                 # "llama.cpp convert_hf_to_gguf 0.3.36" or "tuneloop"
    root: Path | None         # the converter's llama.cpp folder; None: our own writer
    architectures: frozenset[str]


def choose_writer() -> Writer:
    """llama.cpp's converter where it is set up, else tuneloop's own writer."""
    try:
        root = reference.find_converter()
    except reference.ConverterError as exc:  # the env var points nowhere: say so, do not guess
        raise GGUFExportError(str(exc)) from None
    if root is None:
        return Writer(OWN, None, frozenset(ARCHITECTURES))
    version = reference.converter_version(root) or reference._installed_llama_cpp_version() or "?"
    return Writer(f"llama.cpp convert_hf_to_gguf {version}", root,
                  reference.supported_architectures(root))


def architecture(model_dir: str | Path) -> str:
    return (read_config(Path(model_dir)).get("architectures") or ["?"])[0]


def check_architecture(model_dir: str | Path, writer: Writer | None = None) -> str:
    """The HF architecture of ``model_dir`` if ``writer`` converts it; else GGUFExportError."""
    writer = writer or choose_writer()
    arch = architecture(model_dir)
    if arch in writer.architectures:
        return arch
    known = sorted(writer.architectures)
    examples = [a for a in _EXAMPLES if a in writer.architectures]
    examples += [a for a in known if a not in examples][: max(0, 5 - len(examples))]
    if writer.root is None:
        raise GGUFExportError(
            f"{model_dir}: tuneloop's own GGUF writer cannot convert {arch}; it converts "
            f"{len(known)} architectures ({', '.join(known)}). `tuneloop export setup-converter` "
            "sets up llama.cpp's converter, which converts many more.")
    what = writer.name.replace(" convert_hf_to_gguf", "")
    raise GGUFExportError(f"{model_dir}: {what} cannot convert {arch}; it converts {len(known)} "
                          f"architectures, e.g. {', '.join(examples[:5])}.")


def _strip_tags(text: str) -> str:
    from tuiapp.engine.export.vocab import _GENERATION_TAGS

    return _GENERATION_TAGS.sub("", text)


def _staged(model_dir: Path, into: Path) -> Path | None:
    """A folder like ``model_dir`` with generation tags removed from its chat template, or None
    when it has none (then the folder is converted as it is)."""
    changed = {}
    for name in _TEMPLATE_FILES:
        path = model_dir / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if name.endswith(".json"):
                data = json.loads(text)
                template = data.get("chat_template")
                if isinstance(template, str) and _strip_tags(template) != template:
                    data["chat_template"] = _strip_tags(template)
                    changed[name] = json.dumps(data, indent=2, ensure_ascii=False)
            elif _strip_tags(text) != text:
                changed[name] = _strip_tags(text)
    if not changed:
        return None
    for item in model_dir.iterdir():
        if item.name in changed:
            (into / item.name).write_text(changed[item.name], encoding="utf-8")
        else:
            os.symlink(item.resolve(), into / item.name)
    return into


def _fallback_pre(model_dir: Path) -> str | None:
    """The pre-tokenizer tuneloop reads from the tokenizer.json regex, for a tokenizer whose
    hash the converter does not know (e.g. the demo's, trained here)."""
    from tuiapp.engine.export.vocab import VocabError, _pre_tokenizer_name

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return _pre_tokenizer_name(json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer"),
                                   path)
    except (VocabError, ValueError):
        return None


def write_float(model_dir: str | Path, out_path: str | Path, dtype: str,
                writer: Writer | None = None) -> dict:
    """Write the ``dtype`` GGUF of ``model_dir`` with ``writer``; the summary names the writer."""
    model_dir, writer = Path(model_dir), writer or choose_writer()
    check_architecture(model_dir, writer)
    if writer.root is None:
        return {**write_gguf(model_dir, out_path, dtype), "writer": OWN}
    with tempfile.TemporaryDirectory(prefix="tuneloop-stage-") as tmp:
        stage = Path(tmp) / model_dir.name  # same name: the converter derives general.name from it
        stage.mkdir()
        source = _staged(model_dir, stage) or model_dir
        try:
            info = reference.convert(source, out_path, dtype, root=writer.root,
                                     fallback_pre=_fallback_pre(model_dir))
        except reference.ConverterError as exc:
            raise GGUFExportError(str(exc)) from None
    return {**info, "writer": writer.name}
