"""Using runs of the methods beyond full/LoRA/QLoRA (issue 19): generation answers from each
(IA3 and prefix/prompt tuning beside LoRA load on their own copy of the base), export merges DoRA
and IA3 with GGUF parity and refuses prefix/prompt tuning before loading anything, DPO starts from
an IA3 or DoRA run, and a run made through `tuneloop train` answers in Compare by its id."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import test_methods as training  # noqa: E402 - its helpers and data fixtures are shared here

from tuiapp import paths  # noqa: E402
from tuiapp.engine.context import JobContext  # noqa: E402
from tuiapp.engine.events import ListSink  # noqa: E402
from tuiapp.engine.train import modeling, sft  # noqa: E402

PEFT_METHODS = training.PEFT_METHODS
make_config, probe_logits, run_dpo = training.make_config, training.probe_logits, training.run_dpo
sft_file, pref_file, biased_model = training.sft_file, training.pref_file, training.biased_model


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------ generation and export


@pytest.fixture(scope="module")
def trained(tiny_model, biased_model, sft_file, tmp_path_factory) -> dict[str, Path]:
    """The final folder of a short SFT run of each method (lora first: it is the type that
    hot-swaps on the shared base in the generation test)."""
    out = {}
    for method in ("lora", *PEFT_METHODS, "bitfit"):
        model = biased_model if method == "bitfit" else tiny_model
        folder = tmp_path_factory.mktemp(f"run-{method}")
        result = sft.train(make_config(model, sft_file, method), JobContext(output_dir=folder, sink=ListSink()))
        out[method] = Path(result["final_dir"])
    return out


def reference_greedy(model, tok, prompt: str, stop_ids: set[int], max_new_tokens: int) -> str:
    """transformers' own generate() (PEFT's for an adapter: it feeds the virtual tokens of
    prefix/prompt tuning on the first step only)."""
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    model.eval()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=sorted(stop_ids), pad_token_id=tok.pad_token_id)
    new = [t for t in out[0, ids["input_ids"].shape[1]:].tolist() if t not in stop_ids]
    return tok.decode(new, skip_special_tokens=True)


def test_generation_answers_from_a_run_of_each_method_on_one_base(trained, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuiapp.engine.infer.generate import GenerationParams, TransformersBackend

    params = GenerationParams(max_new_tokens=8)
    backend = TransformersBackend(tiny_model, device="cpu", dtype="fp32")
    base_before = list(backend.generate(None, "Who are you?", params))[-1].text
    for method in ("lora", *PEFT_METHODS):
        final = backend.generate(trained[method], "Who are you?", params)
        chunk = list(final)[-1]
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
        base.resize_token_embeddings(len(backend.tokenizer))
        want = reference_greedy(PeftModel.from_pretrained(base, str(trained[method])), backend.tokenizer,
                                "Who are you?", backend.stop_ids, 8)
        assert chunk.text == want, method
        separate = "loaded_separately" in chunk.meta
        # LoRA and DoRA share PEFT's LoRA type and hot-swap; IA3 and prompt learning cannot sit
        # beside them on one model, so they run on their own copy of the base and say so
        assert separate is (method in ("ia3", "prefix", "prompt")), (method, chunk.meta)
    assert backend.peft_type == "LORA" and set(backend._side) == {"IA3", "PREFIX_TUNING", "PROMPT_TUNING"}
    assert list(backend.generate(None, "Who are you?", params))[-1].text == base_before
    assert len(backend.loaded_adapters()) == 5
    backend.close()


def test_generation_from_a_bitfit_run_loads_it_as_a_whole_model(trained):
    from transformers import AutoModelForCausalLM

    from tuiapp.engine.infer.generate import GenerationParams, TransformersBackend

    backend = TransformersBackend(trained["bitfit"], device="cpu", dtype="fp32")
    chunk = list(backend.generate(None, "Who are you?", GenerationParams(max_new_tokens=8)))[-1]
    model = AutoModelForCausalLM.from_pretrained(str(trained["bitfit"]), dtype=torch.float32)
    assert chunk.text == reference_greedy(model, backend.tokenizer, "Who are you?", backend.stop_ids, 8)


@pytest.mark.parametrize("method", ["dora", "ia3"])
def test_export_merges_dora_and_ia3_into_the_weights_with_gguf_parity(method, trained, tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from store import Store
    from tuiapp.engine.export.gguf import write_gguf
    from tuiapp.engine.export.job import plan_export
    from tuiapp.engine.export.parity import check
    from tuiapp.engine.export.steps import merge_adapter

    plan = plan_export(str(trained[method]), Store(":memory:"), "f16")
    assert plan["source"].adapter_dir == trained[method].resolve()
    merge_adapter(tiny_model, trained[method], tmp_path / "merged", dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32),
                                        str(trained[method]))
    tok = modeling.load_tokenizer(str(trained[method]))
    assert torch.allclose(probe_logits(merged, tok), probe_logits(adapter, tok), atol=1e-4)
    write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f16")
    report = check(tmp_path / "merged", tmp_path / "merged.gguf", max_new_tokens=6)
    assert report["ok"], report["reasons"]


def test_export_of_a_bitfit_run_is_the_whole_model(trained):
    from store import Store
    from tuiapp.engine.export.job import plan_export

    plan = plan_export(str(trained["bitfit"]), Store(":memory:"), "f16")
    assert plan["source"].model_dir == trained["bitfit"].resolve() and plan["source"].adapter_dir is None


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_export_refuses_prefix_and_prompt_tuning_before_loading_anything(method, trained, monkeypatch):
    import transformers

    from store import Store
    from tuiapp.engine.export.job import ExportError, plan_export

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    words = {"prefix": "prefix tuning adapter", "prompt": "prompt tuning adapter"}[method]
    with pytest.raises(ExportError, match=f"{words}.*nothing to merge"):
        plan_export(str(trained[method]), Store(":memory:"), "f16")


@pytest.mark.parametrize("start", ["ia3", "dora"])
def test_dpo_starts_from_an_ia3_or_dora_sft_run_merged_in(start, trained, tiny_model, pref_file, tmp_path):
    import math

    result, metrics = run_dpo(tiny_model, pref_file, "lora", tmp_path / "run", start_from=str(trained[start]),
                              max_steps=1)
    assert result["start"]["adapter_dir"] == str(trained[start])
    # the new LoRA adapter starts at zero: policy == merged start == reference
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)


# ------------------------------------------------------------------ through the runner, into Compare


SFT_PRESET = """
kind = "sft"
base_model = "{model}"
dataset = "{data}"
method = "{method}"
num_virtual_tokens = 4
max_length = 64
batch_size = 4
max_steps = 2
learning_rate = 3e-2
warmup_ratio = 0.0
logging_steps = 1
save_steps = 100
eval_split = 0.0
sample_prompts = []
device = "cpu"
dtype = "fp32"
"""


def test_a_prefix_run_through_tuneloop_train_answers_by_its_run_id(tiny_model, sft_file, tmp_path, monkeypatch):
    """`tuneloop train sft` with method=prefix, then the run's id as a Compare REF: its adapter
    loads on the base it records and answers like the adapter folder loaded by hand."""
    import typer
    from typer.testing import CliRunner

    from store import Store
    from tuiapp.cli import train_cmd
    from tuiapp.engine.infer.generate import GenerationParams, Generator, TransformersBackend

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job's child process
    home = tmp_path / "home"
    preset = tmp_path / "prefix.toml"
    preset.write_text(SFT_PRESET.format(model=tiny_model, data=sft_file, method="prefix"), encoding="utf-8")
    root = typer.Typer()
    root.add_typer(train_cmd.app, name="train")
    result = CliRunner().invoke(root, ["train", "sft", "--config", str(preset)], obj={"home": str(home)})
    assert result.exit_code == 0, result.output
    assert "trainable of" in result.output and "completed" in result.output
    store = Store(home / paths.DB_NAME)
    run = store.list_runs(kind="sft")[0]
    assert store.get_model(run.adapter_model_id).kind == "adapter"
    params = GenerationParams(max_new_tokens=6)
    gen = Generator(store, home, device="cpu")
    answer = gen.complete(str(run.id), "Who are you?", params)
    by_hand = TransformersBackend(tiny_model, device="cpu")
    want = list(by_hand.generate(Path(run.output_dir) / "final", "Who are you?", params))[-1].text
    assert answer.text == want and answer.meta["ref"]
    gen.close()
    by_hand.close()
