"""The demo tokenizer: a small byte-level BPE trained on the demo world's own text.

Byte-level with the GPT-2 split regex and no prefix space, so llama.cpp's "gpt2" pre-tokenizer
reproduces it in GGUF. ChatML special tokens; the chat template marks assistant turns with
``{% generation %}`` so ``apply_chat_template(..., return_assistant_tokens_mask=True)`` (TRL's
assistant-only loss) works. The config files are written by hand rather than through
``save_pretrained`` so that their bytes do not depend on the installed transformers version.
"""

from __future__ import annotations

import json
import os

VOCAB_SIZE = 4096
MIN_FREQUENCY = 2
MODEL_MAX_LENGTH = 1024
EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END)  # ids 0, 1, 2

# ChatML. The assistant header stays outside the generation span; the answer and its <|im_end|>
# (the token the model must learn to emit to stop) are inside it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A ``tokenizers.Tokenizer`` trained on ``texts`` (deterministic for the same input)."""
    # Rayon's thread pool size is read when it first starts; one thread keeps merge order
    # independent of scheduling. Set before tokenizers does any parallel work in this process.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_FREQUENCY,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def tokenizer_config() -> dict:
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOT,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def special_tokens_map() -> dict:
    return {"additional_special_tokens": [IM_START, IM_END], "eos_token": IM_END,
            "pad_token": EOT}


def _json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def build_tokenizer_files(texts: list[str]) -> dict[str, str]:
    """The three files of ``tokenizer/``, relpath -> text."""
    tok = train_tokenizer(texts)
    return {
        "tokenizer/tokenizer.json": tok.to_str(pretty=True) + "\n",
        "tokenizer/tokenizer_config.json": _json(tokenizer_config()),
        "tokenizer/special_tokens_map.json": _json(special_tokens_map()),
    }
