"""`tuneloop generate` and `tuneloop eval` through typer's CliRunner, mounted as __main__ will
mount them, on a tiny random-init Llama and a LoRA run made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.cli import eval_cmd, generate_cmd  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"


def tiny_llama(folder: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def lora_run_dir(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0)
    peft.save_pretrained(str(out / "final"))
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("cli") / "base")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = typer.Typer()
    root.command("generate")(generate_cmd.generate)
    root.command("eval")(eval_cmd.eval_models)

    @root.callback()
    def _root() -> None:  # keeps both as sub-commands, as under the real `tuneloop`
        pass

    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(root, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


def make_run(home: Path, base: Path, tmp_path: Path) -> int:
    from tuiapp.workspace import open_workspace

    ws = open_workspace(home)
    row = ws.store.add_model("tiny", "hf", str(base.resolve()))
    out = lora_run_dir(base, tmp_path / "run")
    return ws.store.create_run("sft", {"base_model": str(base)}, base_model_id=row.id,
                               output_dir=str(out), status="completed").id


def test_generate_streams_prints_figures_and_stores(cli, base_dir):
    res = cli("generate", "--model", "base", "--base", base_dir, "--prompt", "Where does Sounu live?",
              "--stream", "--max-new-tokens", "6")
    assert res.exit_code == 0, res.output
    assert "6 tokens in" in res.stderr and "tokens/s" in res.stderr and "first token" in res.stderr
    (row,) = Store(cli.home / "tuneloop.db").list_generations()
    assert row.model_ref == "base" and row.tokens == 6
    assert res.stdout == row.output + "\n"


def test_generate_json_for_a_run(cli, base_dir, tmp_path):
    run_id = make_run(cli.home, base_dir, tmp_path)
    res = cli("generate", "-m", str(run_id), "-p", "Hello", "--system", "Be brief.", "-n", "5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"] == f"run:{run_id}" and data["tokens"] <= 5 and data["finish_reason"] in ("length", "eos")
    row = Store(cli.home / "tuneloop.db").list_generations(run_id=run_id)[0]
    assert row.id == data["generation_id"] and row.output == data["text"] and row.system == "Be brief."


def test_eval_json_and_table(cli, base_dir, tmp_path):
    run_id = make_run(cli.home, base_dir, tmp_path)
    prompts = tmp_path / "set.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Which town is Tesosto from?", "reference": "Thornbury"},
        {"prompt": "What is Fohoun's craft?", "reference": "potter"},
        {"prompt": "Say hi", "reference": "hi"}]) + "\n")
    res = cli("eval", "--models", f"base,{run_id}", "--prompts", prompts, "--limit", "2", "-n", "4",
              "--base", base_dir, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["models"] == ["base", f"run:{run_id}"] and data["n_prompts"] == 2
    assert data["scorers"] == ["exact", "contains"]
    for ref in data["models"]:
        m = data["metrics"][ref]
        assert m["n"] == 2 and set(m["scores"]) == {"exact", "contains"} and m["mean_tokens"] <= 4
    (ev,) = Store(cli.home / "tuneloop.db").list_evaluations(run_id=run_id)
    assert ev.id == data["evaluation_id"] and len(ev.details["prompts"]) == 2

    res = cli("eval", "--models", "base", "--prompts", prompts, "-n", "3", "--base", base_dir,
              "--scorers", "contains")
    assert res.exit_code == 0, res.output
    assert "contains" in res.stdout and "base" in res.stdout and "3 prompts" in res.stdout


def test_bad_refs_and_files_exit_2_in_words(cli, base_dir, tmp_path):
    res = cli("generate", "--model", "no-such-model", "--prompt", "hi")
    assert res.exit_code == 2 and "unknown model REF 'no-such-model'" in res.stderr
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 4 + b"\x00" * 16)
    res = cli("generate", "--model", bad, "--prompt", "hi")
    assert res.exit_code == 2 and "broken.gguf" in res.stderr
    res = cli("eval", "--models", "base,4242", "--prompts", TOKENIZER.parent / "eval_heldout.jsonl",
              "--base", base_dir)
    assert res.exit_code == 2 and "no run with id 4242" in res.stderr
    res = cli("eval", "--models", "base", "--prompts", tmp_path / "none.jsonl", "--base", base_dir)
    assert res.exit_code == 2 and "no such file" in res.stderr
    res = cli("generate", "--model", "base", "--base", base_dir, "--prompt", "hi", "--top-p", "0")
    assert res.exit_code == 2 and "top_p" in res.stderr
    assert "Traceback" not in res.output


def test_generate_in_a_real_process_prints_no_loading_bars_or_deprecations(base_dir, tmp_path):
    """stderr carries tuneloop's own figures line, not transformers' weight bars or warnings."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "tuiapp", "--home", str(tmp_path / "h"), "generate",
                           "--model", "base", "--base", str(base_dir), "-p", "Hi", "-n", "3",
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and "tokens in" in lines[-1]
    noisy = [ln for ln in lines if "Loading weights" in ln or "Warning" in ln or "it/s]" in ln]
    assert not noisy, proc.stderr
