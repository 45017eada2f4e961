"""Generation backends on a tiny random-init Llama with the demo tokenizer: adapter hot-swap
equals the merged model, base equals the plain model, LRU eviction, streaming, stop handling,
the GGUF backend against transformers, REF resolution and storage of every generation."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.engine.infer.generate import (  # noqa: E402
    GenerationError,
    GenerationParams,
    Generator,
    TransformersBackend,
)
from tuiapp.engine.infer.model_refs import RefError, resolve_ref  # noqa: E402
from tuiapp.engine.infer.params import Sampler, TextStream, render_chat  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
PROMPT = "Which town is Tesosto from?"
GREEDY = GenerationParams(max_new_tokens=8)


def make_base(folder: Path, seed: int = 0) -> Path:
    """2 layers, hidden 64; a wide init (0.2) keeps logits far from ties so greedy paths are
    stable under the tiny float differences between LoRA-on-the-fly and merged weights."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.2, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def make_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter whose B matrices are perturbed (fresh LoRA B is zero: a no-op adapter),
    with trainable rows for the template tokens as SFT's train_template_tokens default makes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            trainable_token_indices=[1, 2], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
            elif "trainable_tokens_delta" in name:
                p.normal_(0, 1.0)
    assert any("trainable_tokens" in n for n, _ in peft.named_parameters())
    peft.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    base = make_base(root / "base")
    adapters = [make_adapter(base, root / f"adapter{i}", seed=10 + i) for i in range(3)]
    return {"root": root, "base": base, "adapters": adapters}


@pytest.fixture(scope="module")
def backend(world):
    return TransformersBackend(world["base"], device="cpu", adapter_cache_size=2)


def text_of(chunks) -> str:
    return [c for c in chunks if c.done][-1].text


def test_adapter_on_shared_base_equals_merged_model(world, backend, tmp_path):
    from tuiapp.engine.export.steps import merge_adapter

    merged = tmp_path / "merged"
    merge_adapter(world["base"], world["adapters"][0], merged)
    expected = text_of(TransformersBackend(merged, device="cpu").generate(None, PROMPT, GREEDY))
    got = text_of(backend.generate(world["adapters"][0], PROMPT, GREEDY))
    assert got == expected
    # the adapter really changes the answer, else the comparison above proves nothing
    assert got != text_of(backend.generate(None, PROMPT, GREEDY))


def test_base_with_adapters_disabled_equals_plain_base(world, backend):
    plain = TransformersBackend(world["base"], device="cpu")
    expected = text_of(plain.generate(None, PROMPT, GREEDY))
    # the shared backend has an adapter loaded and active: base must still be the plain base
    list(backend.generate(world["adapters"][1], PROMPT, GREEDY))
    assert text_of(backend.generate(None, PROMPT, GREEDY)) == expected


def test_lru_evicts_least_recently_used(world):
    b = TransformersBackend(world["base"], device="cpu", adapter_cache_size=2)
    a0, a1, a2 = (str(p.resolve()) for p in world["adapters"])
    first = text_of(b.generate(a0, PROMPT, GREEDY))
    list(b.generate(a1, PROMPT, GREEDY))
    list(b.generate(a0, PROMPT, GREEDY))      # a0 is now the most recent
    list(b.generate(a2, PROMPT, GREEDY))      # evicts a1
    assert b.loaded_adapters() == [a0, a2]
    assert len(b.peft.peft_config) == 2
    assert text_of(b.generate(a0, PROMPT, GREEDY)) == first


def test_streaming_chunks_concatenate_to_final_text(backend):
    chunks = list(backend.generate(None, PROMPT, GenerationParams(max_new_tokens=12)))
    final = chunks[-1]
    pieces = [c.text for c in chunks[:-1]]
    assert final.done and len(pieces) >= 3
    assert "".join(pieces) == final.text
    assert final.tokens == 12 and final.finish_reason == "length"
    assert final.latency_s > 0 and final.tokens_per_s > 0 and 0 < final.first_token_s <= final.latency_s


def test_stop_string_and_max_new_tokens(backend):
    full = text_of(backend.generate(None, PROMPT, GenerationParams(max_new_tokens=12)))
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), full
    chunks = list(backend.generate(None, PROMPT, GenerationParams(max_new_tokens=12, stop=(stop,))))
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.text == full[: full.find(stop)]
    assert "".join(c.text for c in chunks[:-1]) == final.text   # nothing of the stop leaked out
    short = list(backend.generate(None, PROMPT, GenerationParams(max_new_tokens=3)))[-1]
    assert short.tokens == 3


def test_sampling_is_seeded(backend):
    hot = GenerationParams(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7)
    a = text_of(backend.generate(None, PROMPT, hot))
    b = text_of(backend.generate(None, PROMPT, hot))
    c = text_of(backend.generate(None, PROMPT, GenerationParams(max_new_tokens=10, temperature=1.5, seed=8)))
    assert a == b and a != c


def test_sampler_and_text_stream_units():
    import numpy as np

    logits = np.array([0.0, 5.0, 1.0])
    assert Sampler(GenerationParams())(logits) == 1
    # top_p small enough keeps only the best token even when sampling
    assert {Sampler(GenerationParams(temperature=2.0, top_p=0.01, seed=s))(logits) for s in range(5)} == {1}
    words = ["ab", "c", "E", "ND", "x"]
    stream = TextStream(lambda ids: "".join(words[i] for i in ids), stop=("END",))
    out = [stream.push(i) for i in range(4)]
    assert out[0] == ("ab", False) and out[1] == ("c", False)
    assert out[2] == ("", False)            # "E" could start "END": held back
    assert out[3] == ("", True) and stream.text == "abc"


def test_cancel_and_bad_params(backend):
    cancel = threading.Event()
    cancel.set()
    final = list(backend.generate(None, PROMPT, GREEDY, cancel=cancel))[-1]
    assert final.finish_reason == "cancelled" and final.tokens == 0
    with pytest.raises(GenerationError, match="temperature"):
        GenerationParams(temperature=-1)


def test_adapter_from_another_base_is_refused(world, tmp_path):
    other = make_base(tmp_path / "other-base", seed=99)  # same shapes, different weights
    b = TransformersBackend(other, device="cpu")
    with pytest.raises(GenerationError, match="trained on"):
        list(b.generate(world["adapters"][0], PROMPT, GREEDY))


def test_render_chat_matches_transformers(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(world["base"]))
    for msgs in ([{"role": "user", "content": "hi"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "Answer: x."}, {"role": "user", "content": "again"}]):
        ours = render_chat(tok.chat_template, msgs)
        assert ours == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


# ------------------------------------------------------------------ GGUF


def test_gguf_backend_matches_transformers(world, backend, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tuiapp.engine.export.gguf import write_gguf
    from tuiapp.engine.infer.generate import LlamaCppBackend

    path = tmp_path / "base-f32.gguf"
    write_gguf(world["base"], path, "f32")
    gg = LlamaCppBackend(path, n_ctx=128, n_threads=1)
    try:
        params = GenerationParams(max_new_tokens=6)
        hf_ids = backend.prompt_ids(PROMPT, params, system="Be brief.")
        assert gg.prompt_ids(PROMPT, params, system="Be brief.") == hf_ids
        chunks = list(gg.generate(None, PROMPT, params, system="Be brief."))
        final = chunks[-1]
        assert final.done and final.tokens == 6 and final.text
        assert "".join(c.text for c in chunks[:-1]) == final.text
        assert final.text == text_of(backend.generate(None, PROMPT, params, system="Be brief."))
    finally:
        gg.close()


def test_corrupted_gguf_is_a_clear_error(tmp_path, world):
    pytest.importorskip("gguf")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)
    with pytest.raises(RefError, match="broken.gguf"):
        resolve_ref(str(bad))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(RefError, match="not a GGUF file"):
        resolve_ref(str(junk))


# ------------------------------------------------------------------ REFs and storage


def test_refs_resolve_runs_models_folders(world, tmp_path):
    store = Store()
    base_row = store.add_model("tiny", "hf", str(world["base"].resolve()))
    out = tmp_path / "run1"
    (out / "final").mkdir(parents=True)
    for f in world["adapters"][0].iterdir():
        (out / "final" / f.name).write_bytes(f.read_bytes())
    run = store.create_run("sft", {"base_model": str(world["base"])}, base_model_id=base_row.id,
                           output_dir=str(out), name="first")
    r = resolve_ref(str(run.id), store)
    assert (r.ref, r.kind, r.run_id, r.base_dir) == (f"run:{run.id}", "adapter", run.id, world["base"].resolve())
    assert resolve_ref(f"run:{run.id}", store).adapter_dir == (out / "final").resolve()
    assert resolve_ref(f"model:{base_row.id}", store).kind == "hf"
    assert resolve_ref("base", store, base_dir=world["base"]).base_dir == world["base"].resolve()
    folder = resolve_ref(str(world["adapters"][1]), store)
    assert folder.kind == "adapter" and folder.base_dir == world["base"].resolve()
    for bad, match in [("nope", "unknown model REF"), ("999", "no run with id 999"),
                       ("model:42", "no model with id 42"), ("missing.gguf", "no such GGUF")]:
        with pytest.raises(RefError, match=match):
            resolve_ref(bad, store)


def test_generator_stores_every_generation(world, backend):
    store = Store()
    gen = Generator(store, base_dir=world["base"], backend_factory=lambda kind, path: backend)
    chunks = list(gen.generate("base", PROMPT, GREEDY, system="Be brief."))
    final = chunks[-1]
    adapter_answer = gen.complete(str(world["adapters"][2]), PROMPT, GREEDY)
    rows = store.list_generations()
    assert [r.model_ref for r in rows] == [str(world["adapters"][2].resolve()), "base"]
    assert rows[1].output == final.text and rows[1].system == "Be brief."
    assert rows[1].tokens == final.tokens and rows[1].params["max_new_tokens"] == 8
    assert rows[0].output == adapter_answer.text and final.meta["generation_id"] == rows[1].id
    assert json.dumps(rows[0].params)  # JSON-able


def test_two_threads_share_one_backend_and_take_turns(world, backend):
    """Compare panes run one worker each; the backend's lock keeps adapters from switching
    under a running generation, so each thread gets exactly its sequential answer."""
    refs = [None, world["adapters"][0]]
    expected = [text_of(backend.generate(r, PROMPT, GREEDY)) for r in refs]
    got: dict[int, str] = {}

    def work(i):
        got[i] = text_of(backend.generate(refs[i], PROMPT, GREEDY))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [got[0], got[1]] == expected


def test_cpu_generation_threads_follow_the_user_then_the_core_count(monkeypatch):
    import os

    from tuiapp.engine.infer import generate

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert generate.cpu_generation_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert generate.cpu_generation_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert generate.cpu_generation_threads() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert generate.cpu_generation_threads() == 3
