"""Job configurations of the supervised kinds: SFT (full, LoRA, QLoRA) and continued pre-training."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from tuiapp.engine.train.config_base import (
    CHAT_TEMPLATES,
    METHOD_HELP,
    METHODS,
    CommonTrainConfig,
    ConfigError,
    check_method_fields,
    ia3_feedforward_opt,
    ia3_targets_opt,
    opt,
    virtual_tokens_opt,
)


@dataclass
class SFTJobConfig(CommonTrainConfig):
    """Supervised fine-tuning with any of METHODS (full, LoRA, QLoRA, DoRA, IA3, prefix, prompt,
    BitFit)."""

    kind: typing.ClassVar[str] = "sft"

    method: str = opt("lora", METHOD_HELP, METHODS, group="method")
    lora_r: int = opt(16, "LoRA rank: adapter capacity (8-64 typical).", group="method")
    lora_alpha: int = opt(32, "LoRA scaling numerator (the update is scaled by alpha / r).", group="method")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", group="method")
    target_modules: list[str] = opt(
        ["all-linear"], "Modules that get adapters: all-linear, or names such as q_proj,v_proj.", group="method"
    )
    num_virtual_tokens: int = virtual_tokens_opt()
    ia3_target_modules: list[str] = ia3_targets_opt()
    ia3_feedforward_modules: list[str] = ia3_feedforward_opt()
    train_template_tokens: bool = opt(
        True,
        "Under LoRA/DoRA (ignored by the other methods), also train the embedding rows of the chat template's special tokens "
        "(a base model that never saw them cannot learn to stop otherwise).",
        group="method",
    )
    trainable_tokens: list[str] = opt(
        [],
        "Under LoRA, also train the embedding rows of every token of these texts (words the base "
        "model never read: LoRA alone can hardly teach it to write them), e.g. the demo's refusal "
        "sentences, which its corpus never contains.",
        group="method",
    )
    bnb_quant_type: str = opt("nf4", "4-bit quantisation type for QLoRA.", ("nf4", "fp4"), group="method")
    bnb_double_quant: bool = opt(True, "Quantise the quantisation constants too (QLoRA).", group="method")
    chat_template: str = opt(
        "model", "Chat template: the model's own, ChatML, or Llama 3.", CHAT_TEMPLATES, group="data"
    )
    assistant_only_loss: bool = opt(True, "Train on assistant tokens only (prompt tokens masked).", group="data")
    packing: bool = opt(
        True, "Padding-free packing: concatenate examples, no pad tokens, attention kept per example.", group="data"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method_fields(self)


@dataclass
class CPTJobConfig(CommonTrainConfig):
    """Causal-LM training on raw text: continue an existing model or pre-train from scratch."""

    kind: typing.ClassVar[str] = "cpt"

    base_model: str = opt(
        "scratch",
        "Model to continue from (folder, store id, hub id), or 'scratch' for a fresh model "
        "built from the architecture fields below.",
        group="job",
    )
    method: str = opt("full", "full trains every weight; lora trains adapters only.", ("full", "lora"), group="method")
    lora_r: int = opt(16, "LoRA rank when method is lora.", group="method")
    lora_alpha: int = opt(32, "LoRA alpha when method is lora.", group="method")
    tokenizer: str = opt(
        "", "Tokenizer folder for a scratch model ('' : the base model's, or the demo tokenizer).", group="model"
    )
    hidden_size: int = opt(256, "Scratch model: hidden size.", group="model")
    num_layers: int = opt(4, "Scratch model: decoder layers.", group="model")
    num_heads: int = opt(4, "Scratch model: attention heads.", group="model")
    num_kv_heads: int = opt(4, "Scratch model: key/value heads (fewer = grouped-query attention).", group="model")
    intermediate_size: int = opt(688, "Scratch model: MLP width.", group="model")
    tie_embeddings: bool = opt(True, "Scratch model: share input and output embeddings.", group="model")
    rope_theta: float = opt(10000.0, "Scratch model: RoPE base.", group="model")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_model == "scratch":
            if self.hidden_size % self.num_heads:
                raise ConfigError("num_heads", f"hidden_size {self.hidden_size} is not divisible by {self.num_heads} heads")
            if self.num_heads % self.num_kv_heads:
                raise ConfigError("num_kv_heads", f"{self.num_heads} heads are not divisible into {self.num_kv_heads} kv heads")
            if (self.hidden_size // self.num_heads) % 2:
                raise ConfigError("num_heads", "the head dimension must be even for RoPE")
