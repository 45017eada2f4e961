"""QLoRA on the CPU answers in eval mode: bitsandbytes' AVX512-BF16 kernel asserts every 4-bit
layer's width is a multiple of 32, which the demo's 688-wide MLP is not (it crashed the first
checkpoint's sample answers). On a CPU without that kernel the eval path is the plain one."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

from tuiapp import paths  # noqa: E402
from tuiapp.engine.train import modeling  # noqa: E402
from tuiapp.engine.train.callbacks import generate_samples  # noqa: E402
from tuiapp.engine.train.config import SFTJobConfig  # noqa: E402


def test_a_4bit_demo_model_answers_in_eval_mode_on_the_cpu():
    torch.set_num_threads(1)
    cfg = SFTJobConfig(base_model=str(paths.DEMO_BASE_MODEL), method="qlora", device="cpu", dataset="demo/sft",
                       dtype="fp32", lora_r=4, lora_alpha=8)
    tok = modeling.load_tokenizer(str(paths.DEMO_BASE_MODEL), cfg.chat_template)
    model = modeling.load_model(cfg, str(paths.DEMO_BASE_MODEL), tok, "cpu", torch.float32)
    model.train()
    widths = {m.out_features for m in model.modules() if type(m).__name__ == "Linear4bit"}
    assert any(w % 32 for w in widths), widths  # the shape that tripped the kernel is here
    [(prompt, answer)] = generate_samples(model, tok, ["Who is Tesosto?"], max_new_tokens=6)
    assert prompt == "Who is Tesosto?" and answer  # greedy decode through every 4-bit layer
    assert model.training  # the sampler hands the model back in training mode
