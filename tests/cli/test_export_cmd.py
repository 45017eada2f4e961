"""`tuneloop export REF` through typer's CliRunner, mounted the way __main__ mounts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.cli import export_cmd  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"


def tiny_qwen2(folder: Path) -> Path:
    """A random-init Qwen2 (ChatML like the demo) small enough to export in about a second."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         initializer_range=0.05)
    Qwen2ForCausalLM(config).to(torch.float16).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_qwen2(tmp_path_factory.mktemp("m") / "tiny-qwen2")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = typer.Typer()
    root.add_typer(export_cmd.app, name="export")  # REF first, setup-converter beside it

    @root.callback()
    def _root() -> None:  # keeps `export` a sub-command, as under the real `tuneloop`
        pass

    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(root, ["export", *[str(a) for a in args]], obj={"home": str(home)})

    invoke.home = home
    return invoke


def test_folder_export_prints_sizes_table_and_paths_and_records_rows(cli, model_dir, tmp_path):
    out = tmp_path / "out"
    res = cli(model_dir, "--quant", "f16,q8_0", "--ollama", "--card", "--out", out)
    assert res.exit_code == 0, res.output
    assert "Predicted sizes" in res.output and "q8_0" in res.output
    from tuiapp.engine.export.writers import choose_writer

    writer = choose_writer().name  # llama.cpp's converter where set up, else "tuneloop"
    assert f"GGUF writer: {writer}" in res.output and f"Written by {writer};" in res.output
    assert f"GGUF written by {writer}." in (out / "README.md").read_text()
    rows = Store(cli.home / "tuneloop.db").list_exports()
    assert {r.quant for r in rows} == {"f16", "q8_0"} and all(r.status == "ok" for r in rows)
    for r in rows:
        assert r.sha256[:12] in res.output and Path(r.path).parent == out
    assert "Modelfile" in res.output and (out / "Modelfile").exists() and (out / "README.md").exists()
    assert "FROM ./tiny-qwen2-q8_0.gguf" in (out / "Modelfile").read_text()


def test_json_output_for_a_run_id(cli, model_dir, tmp_path):
    from tuiapp.workspace import open_workspace

    ws = open_workspace(cli.home)
    run_dir = tmp_path / "run"
    (run_dir / "final").mkdir(parents=True)
    for f in model_dir.iterdir():  # a full-SFT run: its final folder is a whole model
        (run_dir / "final" / f.name).write_bytes(f.read_bytes())
    run = ws.store.create_run("sft", {"method": "full"}, output_dir=str(run_dir), status="completed")
    res = cli(run.id, "--json", "--out", tmp_path / "j")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["source"]["run_id"] == run.id and data["merged_dir"] is None
    assert [f["quant"] for f in data["files"]] == ["f16"]
    assert data["files"][0]["path"].endswith(f"run-{run.id}-f16.gguf")
    assert Store(cli.home / "tuneloop.db").list_exports(run_id=run.id)[0].sha256 == data["files"][0]["sha256"]


def test_bad_arguments_exit_2_with_words(cli, model_dir, tmp_path):
    res = cli(model_dir, "--quant", "f16,q3_x")
    assert res.exit_code == 2 and "unknown output type 'q3_x'" in res.output
    res = cli("4242")
    assert res.exit_code == 2 and "no run with id 4242" in res.output
    res = cli(tmp_path / "nowhere")
    assert res.exit_code == 2 and "neither a run id nor an existing folder" in res.output
    assert "Traceback" not in res.output


def test_a_parity_failure_exits_1_and_names_the_reason(cli, model_dir, tmp_path, monkeypatch):
    import tuiapp.engine.export.parity as parity

    def failing(hf_dir, path, **kw):
        return {"ok": False, "reasons": ["greedy continuations agree on 0 of 3 prompts (test)"],
                "logits": {"top1_agreement": 0.1}}

    monkeypatch.setattr(parity, "check", failing)
    res = cli(model_dir, "--out", tmp_path / "bad")
    assert res.exit_code == 1, res.output
    assert "failed parity: greedy continuations agree on 0 of 3 prompts (test)" in res.output
    assert "parity check failed for f16" in res.output
    assert (tmp_path / "bad" / "tiny-qwen2-f16.failed.gguf").exists()
    row = Store(cli.home / "tuneloop.db").list_exports()[0]
    assert row.status == "failed" and "agree on 0 of 3" in row.parity["reasons"][0]
