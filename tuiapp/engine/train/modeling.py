"""Shared model loading for the training algorithms: paths, device/dtype, tokenizer and chat
template, full / BitFit / PEFT (LoRA, QLoRA, DoRA, IA3, prefix, prompt; methods.py) models,
and the cheap pre-flight numbers (parameter counts, a
memory estimate) computed on the meta device without reading any weights.

Reuse from another algorithm (dpo.py, reward.py, ...)::

    path = resolve_model_path(config.base_model, ctx.base_model_path)
    device = pick_device(config.device); dtype = pick_dtype(config.dtype, device)
    tok = load_tokenizer(path, config.chat_template)           # template with {% generation %}
    model = load_model(config, path, tok, device, dtype)       # PEFT-wrapped unless method=full

``config`` only needs the SFTJobConfig method fields (method, lora_r, lora_alpha, lora_dropout,
target_modules, train_template_tokens, bnb_quant_type, bnb_double_quant, trust_remote_code).
torch/transformers/peft are imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from tuiapp import paths
from tuiapp.engine.train import methods
from tuiapp.engine.train.config_base import LORA_METHODS

# ChatML and Llama 3 with {% generation %} markers around what the assistant says (its
# end-of-turn token included), so TRL's assistant_only_loss can mask everything else.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
LLAMA3_TEMPLATE = (
    "{%- if bos_token -%}{{- bos_token -}}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{% generation %}{{- message['content'] | trim + '<|eot_id|>' -}}{% endgeneration %}"
    "{%- else -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
TEMPLATES = {
    "chatml": (CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "llama3": (LLAMA3_TEMPLATE, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
}


class ModelLoadError(ValueError):
    """A model, tokenizer or method setting that cannot work, said so a person can fix it."""

    phase = "load_model"
    kind = "config"


# ------------------------------------------------------------------ where and how


def resolve_model_path(base_model: str, resolved: str | None = None) -> str:
    """The folder (or hub id) to load. ``resolved`` (the runner's ctx.base_model_path) wins;
    standalone callers may pass 'demo' or a folder."""
    if resolved:
        return str(resolved)
    if base_model == "demo":
        if not (paths.DEMO_BASE_MODEL / "config.json").exists():
            raise ModelLoadError(f"the demo base model is not built yet ({paths.DEMO_BASE_MODEL}); "
                                 "run `tuneloop demo build-base` first")
        return str(paths.DEMO_BASE_MODEL)
    folder = Path(base_model).expanduser()
    if folder.exists():
        if not (folder / "config.json").exists():
            raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)")
        return str(folder)
    return base_model  # a hub id: loads only if cached (tests and the runner stay offline)


def pick_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device is cuda but no CUDA GPU is visible; set device=cpu or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` on ``device``; auto is ``auto_dtype`` (bf16 where the
    hardware runs it fast, else fp32; fp16 only when asked)."""
    import torch

    if dtype == "auto":
        dtype = auto_dtype(device)[0]
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def auto_dtype(device: str) -> tuple[str, str]:
    """(dtype, why) for dtype=auto: bf16 on a CUDA GPU that supports it and on a CPU with
    bf16 matrix instructions (AMX or AVX512-BF16: a 2048x576x1536 matmul ran 364 vs 90 GFLOPS on
    2 AMX cores, 172 vs 73 on one AVX512-BF16 core; issue 22), fp32 elsewhere (emulated bf16 is
    slower than fp32)."""
    import torch

    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this CUDA GPU supports bf16"
        return "fp32", "this CUDA GPU has no bf16 support"
    if device != "cpu":
        return "fp32", f"bf16 is only chosen on cpu and cuda, not {device}"
    if os.environ.get(CPU_BF16_ENV, "").strip() == "0":
        return "fp32", f"{CPU_BF16_ENV}=0 keeps this CPU in fp32"
    found = cpu_bf16_features()
    if found:
        return "bf16", f"this CPU has {' and '.join(found)}"
    return "fp32", f"this CPU has neither AMX nor AVX512-BF16 (torch kernels: {_cpu_capability()})"


def describe_dtype(dtype: str, device: str) -> str:
    """Pre-flight's dtype line: auto names its pick and the reason."""
    if dtype != "auto":
        return f"{dtype} (set in the config)"
    picked, why = auto_dtype(device)
    return f"auto → {picked}: {why}"


# "0" keeps auto at fp32 on any CPU: bit-for-bit runs across hosts (the test suite sets it)
CPU_BF16_ENV = "TUNELOOP_CPU_BF16"
# /proc/cpuinfo flag -> the name said in pre-flight, fastest first
_CPU_BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


def cpu_bf16_features() -> list[str]:
    """The bf16 matrix instruction sets this CPU has, from /proc/cpuinfo (Linux), else from
    torch's own cpuinfo probe (torch.cpu._is_*_supported, present since torch 2.3)."""
    flags = _cpu_flags()
    if flags is None:
        import torch

        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        flags = {flag for flag, fn in probes.items() if getattr(torch.cpu, fn, lambda: False)()}
    return [name for flag, name in _CPU_BF16_FLAGS.items() if flag in flags]


def _cpu_flags() -> set[str] | None:
    """The first CPU's feature flags; None where /proc/cpuinfo is absent (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _cpu_capability() -> str:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - only named in a message
        return "unknown"


def attention_implementation(device: str, model_path: str | None = None) -> str:
    """flash_attention_2 when installed on CUDA (varlen kernels: padding-free batches cost no
    cross-example attention), else sdpa (transformers builds a block-diagonal mask from the
    reset position_ids, so packed examples still never see each other); eager for a model class
    that has no sdpa path (Gemma 2: transformers refuses to load it when sdpa is asked for)."""
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if model_path and not _supports_sdpa(model_path):
        return "eager"
    return "sdpa"


def _supports_sdpa(model_path: str) -> bool:
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        model_cls = AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(model_path))]
    except (KeyError, OSError, ValueError):
        return True  # unknown here (remote code, hub id offline): let transformers decide on sdpa
    return bool(getattr(model_cls, "_supports_sdpa", True))


# ------------------------------------------------------------------ tokenizer


def load_tokenizer(model_path: str, chat_template: str = "model", trust_remote_code: bool = False):
    """The model's tokenizer with the chosen chat template set (and its special tokens added
    when the tokenizer lacks them: the caller must then resize the embeddings)."""
    from transformers import AutoTokenizer

    local = Path(model_path)
    source = model_path
    if local.is_dir() and not any((local / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        source = str(paths.DEMO_TOKENIZER)  # a bare model folder (e.g. random-init) uses the demo one
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - name the folder and the cause
        raise ModelLoadError(f"cannot load a tokenizer from {source}: {exc}") from exc
    if chat_template == "model" and not getattr(tok, "chat_template", None):
        chat_template = "chatml"  # a base model without a template gets ChatML
    if chat_template in TEMPLATES:
        template, needed, end = TEMPLATES[chat_template]
        missing = [t for t in needed if t not in tok.get_vocab()]
        if missing and chat_template == "llama3":
            raise ModelLoadError(f"chat_template=llama3 needs a Llama 3 tokenizer; {source} lacks "
                                 f"{', '.join(missing)}. Use chat_template=chatml or model.")
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing})
        tok.chat_template = template
        tok.eos_token = end  # generation stops at the end of the assistant's turn
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def checkpointing_arguments(on: bool) -> dict[str, Any]:
    """Trainer arguments for gradient (activation) checkpointing, by whichever name the installed
    transformers uses: 5.2x calls it activation_checkpointing, earlier 5.x gradient_checkpointing
    (the GPU image this was checked on carries 5.17)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: on, f"{key}_kwargs": {"use_reentrant": False} if on else None}


def template_token_ids(tokenizer) -> list[int]:
    """Ids of the special tokens the chat template writes (e.g. <|im_start|>, <|im_end|>)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    ids = [i for i, added in tokenizer.added_tokens_decoder.items()
           if added.special and added.content and added.content in template]
    return sorted(set(ids))


def trainable_token_ids(config: Any, tokenizer) -> list[int]:
    """Embedding rows that train beside the LoRA adapters: the chat template's special tokens
    (``train_template_tokens``) and every token of the ``trainable_tokens`` texts."""
    ids = set(template_token_ids(tokenizer)) if getattr(config, "train_template_tokens", False) else set()
    for text in getattr(config, "trainable_tokens", None) or []:
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(ids)


# ------------------------------------------------------------------ model


def lora_config(config: Any, token_rows: list[int] | None = None):
    """The PEFT config of the config's method (LoRA, DoRA, IA3, prefix, prompt; methods.py)."""
    return methods.peft_config(config, token_rows)


def _token_rows(config: Any, tokenizer) -> list[int]:
    """Embedding rows trained beside the adapters: LoRA and DoRA only (PEFT's LoraConfig is the
    one that supports them)."""
    if config.method not in LORA_METHODS or tokenizer is None:
        return []
    return trainable_token_ids(config, tokenizer)


def bnb_config(config: Any, compute_dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.bnb_quant_type,
                              bnb_4bit_use_double_quant=config.bnb_double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_model(config: Any, model_path: str, tokenizer, device: str, dtype,
               gradient_checkpointing: bool = False):
    """Full model or BitFit (fp32 master weights), base + a PEFT adapter (base in the compute
    dtype), or a 4-bit base + LoRA (QLoRA). Embeddings are resized when the template added tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    method = config.method
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code,
                              "attn_implementation": attention_implementation(device, model_path)}
    if method in methods.WHOLE_MODEL_METHODS:
        kwargs["dtype"] = torch.float32  # mixed precision autocasts; the optimiser keeps fp32
    elif method != "qlora":
        kwargs["dtype"] = dtype
    else:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError("method=qlora needs bitsandbytes (pip install bitsandbytes), "
                                 "or use method=lora") from exc
        kwargs["quantization_config"] = bnb_config(config, dtype)
        kwargs["dtype"] = dtype
        # each rank of a process group holds its own 4-bit copy on its own GPU (LOCAL_RANK)
        kwargs["device_map"] = {"": device if device == "cpu" else _local_gpu()}
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load the model {model_path}: {exc}") from exc
    if method != "qlora":
        model.to(device if device == "cpu" else f"cuda:{_local_gpu()}")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if method == "full":
        return model
    try:
        if method == "bitfit":
            methods.train_biases_only(model, model_path)
            return model
        if method == "qlora":
            _prepare_4bit(model, gradient_checkpointing)
        model = methods.wrap(model, config, _token_rows(config, tokenizer), model_path)
    except methods.MethodError as exc:
        raise ModelLoadError(str(exc)) from exc
    _expose_head_bias(model)
    return model


def _prepare_4bit(model, gradient_checkpointing: bool) -> None:
    """Ready a 4-bit base for adapter training: every base weight frozen, checkpointing wired.

    PEFT's prepare_model_for_kbit_training does this too but also casts every weight that is not
    4-bit (embeddings, LM head, norms) to fp32. The frozen weights gain nothing from it under bf16
    autocast, and it costs: on a Llama-3-8B shape the two 128k-vocab matrices grow by 2 GiB, the
    residual stream and the logits become fp32 (the activations saved for backward double). On
    an H100 it made tuneloop's QLoRA peak 1.44x plain TRL's (which does not upcast);
    bench/sft_throughput.py and docs/benchmarks.md have the numbers."""
    for param in model.parameters():
        param.requires_grad_(False)
    _cpu_4bit_shapes(model)
    if gradient_checkpointing:
        # 5.2x renamed gradient_checkpointing_enable (kept as a deprecated alias); 5.17 has the old name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # the first checkpointed block needs a grad-carrying input


def _cpu_4bit_shapes(model) -> None:
    """bitsandbytes (0.50) repacks a 4-bit weight for its AVX512-BF16 CPU kernel the first time
    the layer runs in eval mode without grad, and that repacking only works when the output width
    is a multiple of 32 and the input width a multiple of the quantisation block: the demo's
    688-wide MLP crashed the first checkpoint's sample answers ("N must be divisible by
    block_n", then an absmax reshape). Such layers keep the plain 4-bit path."""
    for module in model.modules():
        if not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        block = getattr(state, "blocksize", 64) or 64
        if module.out_features % 32 or module.in_features % block:
            module.support_avx512bf16_for_cpu = False


def _expose_head_bias(model) -> None:
    """With tied embeddings, PEFT wraps lm_head for the trainable token rows; the wrapper passes
    ``weight`` through (merged with the trained rows) but not ``bias``, which TRL's fused LM-head
    loss reads. Give the wrapper the head's own bias (None for Llama-style heads)."""
    head = model.get_output_embeddings()
    if head is not None and type(head).__name__ == "TrainableTokensWrapper" and "bias" not in vars(head):
        original = getattr(head, "original_module", None)
        object.__setattr__(head, "bias", getattr(original, "bias", None))


# ------------------------------------------------------------------ pre-flight


def _meta_model(config: Any, model_path: str, tokenizer=None):
    """The model (and its adapters) built on the meta device: shapes only, no memory, no I/O
    beyond config.json."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.from_pretrained(model_path, trust_remote_code=config.trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read the model config of {model_path}: {exc}") from exc
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=config.trust_remote_code)
        try:
            if config.method == "bitfit":
                methods.train_biases_only(model, model_path)
            elif methods.is_peft(config.method):
                model = methods.wrap(model, config, _token_rows(config, tokenizer), model_path)
        except methods.MethodError as exc:
            raise ModelLoadError(str(exc)) from exc
    return model, hf_config


def count_parameters(config: Any, model_path: str | None = None, tokenizer=None) -> tuple[int, int]:
    """(trainable, total) for the config's method and rank; total counts the adapter too and
    tied weights once. QLoRA counts the base at its logical (unpacked) size; BitFit's trainable
    biases are part of the base."""
    path = resolve_model_path(config.base_model, model_path)
    rows = getattr(config, "train_template_tokens", False) or getattr(config, "trainable_tokens", None)
    if tokenizer is None and rows and config.method in LORA_METHODS:
        tokenizer = load_tokenizer(path, getattr(config, "chat_template", "model"), config.trust_remote_code)
    model, _ = _meta_model(config, path, tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def estimate_memory(config: Any, model_path: str | None = None, tokens_per_step: int | None = None,
                    device: str | None = None, tokenizer=None) -> dict[str, Any]:
    """A rough peak-memory estimate in bytes for one training step.

    weights (fp32 full, compute dtype for LoRA, ~0.52 byte/param for 4-bit nf4 with double
    quantisation) + 16 bytes per trainable parameter (fp32 weight copy, gradient, two AdamW
    moments) + activations for ``tokens_per_step`` tokens (default batch_size x max_length, the
    padding-free worst case) + logits. Good to a factor of ~1.5: it is for refusing plainly
    impossible runs and for choosing knobs, not for packing a GPU to the last MiB.
    """
    path = resolve_model_path(config.base_model, model_path)
    device = device or pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    compute_bytes = 2 if str(dtype).endswith(("bfloat16", "float16")) else 4
    trainable, total = count_parameters(config, path, tokenizer)
    _, hf = _meta_model(config, path, tokenizer)
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    hidden = getattr(text, "hidden_size", 0)
    layers = getattr(text, "num_hidden_layers", 0)
    inter = getattr(text, "intermediate_size", 4 * hidden)
    vocab = getattr(text, "vocab_size", 0)
    whole = config.method in methods.WHOLE_MODEL_METHODS
    base = total - (0 if whole else trainable)
    # full and bitfit load fp32 master weights; PEFT methods keep the base in the compute dtype
    per_param = 4.0 if whole else 0.52 if config.method == "qlora" else float(compute_bytes)
    weights = int(base * per_param)
    optimiser = int(trainable * (12 if whole else 16))  # whole model: the weights counted above
    tokens = tokens_per_step or config.batch_size * config.max_length
    if config.method == "prompt":  # the virtual tokens run through every layer with the input
        tokens += config.batch_size * config.num_virtual_tokens
    # Saved per token per layer: inputs of the 7 projections, norms, attention output and the
    # MLP's gate/up/act outputs; with checkpointing only each layer's input (+ one live layer).
    per_layer = (8 * hidden + 4 * inter) * compute_bytes
    if config.gradient_checkpointing:
        activations = tokens * (layers * hidden * compute_bytes + per_layer)
    else:
        activations = tokens * layers * per_layer
    logits = tokens * vocab * 4 * 3  # fp32 logits, their log-softmax and gradient
    overhead = 300 * 2**20 if device == "cuda" else 0  # CUDA context and allocator slack
    total_bytes = weights + optimiser + activations + logits + overhead
    return {
        "device": device, "dtype": str(dtype).replace("torch.", ""), "method": config.method,
        "trainable_params": trainable, "total_params": total, "tokens_per_step": tokens,
        "weights_bytes": weights, "optimizer_bytes": optimiser, "activations_bytes": activations,
        "logits_bytes": logits, "overhead_bytes": overhead, "total_bytes": total_bytes,
        "first_knob": _first_knob(config, activations + logits, weights + optimiser),
    }


def _first_knob(config: Any, activation_like: int, static: int) -> str:
    if activation_like > static:
        if not config.gradient_checkpointing:
            return "gradient_checkpointing=true"
        return f"batch_size={max(1, config.batch_size // 2)} with grad_accum={config.grad_accum * 2}"
    if config.method in methods.WHOLE_MODEL_METHODS:
        return "method=lora"
    if config.method == "lora":
        return "method=qlora"
    return f"max_length={max(16, config.max_length // 2)}"


def _local_gpu() -> int:
    """This process's GPU: LOCAL_RANK under accelerate launch / torchrun, else 0."""
    import os

    return int(os.environ.get("LOCAL_RANK", "0") or 0)
