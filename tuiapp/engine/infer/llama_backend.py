"""The llama.cpp generation backend: a GGUF file, its prompt rendered by our chat template
renderer exactly as transformers renders it, streamed through the decode loop the transformers
backend uses too (params.decode_loop), so a GGUF and its source model are compared like for like."""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tuiapp.engine.infer.params import (
    STOP_TOKEN_TEXTS,
    Chunk,
    GenerationError,
    GenerationParams,
    TextStream,
    decode_loop,
    messages_for,
    render_chat,
)


def _template_beside(gguf_path: Path) -> str | None:
    """The HF chat template stored next to a GGUF (an export folder keeps the tokenizer files)."""
    folder = gguf_path.parent
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.exists():
        template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    return None


class LlamaCppBackend:
    """A GGUF file in llama.cpp. The chat template is rendered by us (the HF template next to the
    file, else the file's own ``tokenizer.chat_template``, else ChatML) exactly as transformers
    renders it, so a GGUF and its source model see the same prompt tokens."""

    def __init__(self, gguf_path: str | Path, n_ctx: int = 2048, n_threads: int | None = None):
        import os

        import llama_cpp

        from tuiapp.engine.infer.gguf_file import GGUFFileError, capture_llama_logs, inspect_gguf
        from tuiapp.engine.train.modeling import CHATML_TEMPLATE

        self.path = Path(gguf_path).resolve()
        inspect_gguf(self.path)  # raises GGUFFileError in words before llama.cpp can abort
        threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        try:
            with capture_llama_logs() as lines:
                self.llm = llama_cpp.Llama(str(self.path), n_ctx=n_ctx, n_threads=threads,
                                           n_threads_batch=threads, logits_all=False, verbose=False)
        except ValueError:
            reason = next((ln.strip() for ln in lines if "error" in ln.lower()), "no reason given")
            raise GGUFFileError(f"{self.path}: llama.cpp could not load it: {reason}") from None
        self.n_ctx = n_ctx
        self.n_vocab = self.llm.n_vocab()
        meta = self.llm.metadata
        self.template = _template_beside(self.path) or meta.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self.bos_text = self._token_text(meta.get("tokenizer.ggml.bos_token_id"))
        self.eos_text = self._token_text(meta.get("tokenizer.ggml.eos_token_id"))
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.stop_ids = {self.llm.token_eos()}
        for text in STOP_TOKEN_TEXTS:
            ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self.stop_ids.add(ids[0])
        self.lock = threading.Lock()
        atexit.register(self.close)

    def _token_text(self, token_id) -> str:
        if token_id is None:
            return ""
        return self.llm.detokenize([int(token_id)], special=True).decode("utf-8", "replace")

    def prompt_ids(self, prompt: str | list[dict], params: GenerationParams,
                   system: str | None = None) -> list[int]:
        if not params.chat:
            return self.llm.tokenize(str(prompt).encode(), add_bos=self.add_bos, special=False)
        text = render_chat(self.template, messages_for(prompt, system), bos_token=self.bos_text,
                           eos_token=self.eos_text)
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def _logits(self):
        import numpy as np

        # llama.cpp keeps only the last position's logits when logits_all is off.
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).copy()

    def generate(self, adapter: None, prompt: str | list[dict], params: GenerationParams | None = None,
                 *, system: str | None = None, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Stream an answer. ``adapter`` must be None (a GGUF has its weights merged)."""
        if adapter is not None:
            raise GenerationError("a GGUF model has no adapters to switch; export the run to GGUF instead")
        if self.llm is None:
            raise GenerationError(f"{self.path} was closed")
        params = params or GenerationParams()
        t0 = time.perf_counter()
        ids = self.prompt_ids(prompt, params, system)
        if len(ids) >= self.n_ctx:
            raise GenerationError(f"the prompt is {len(ids)} tokens; the context is {self.n_ctx}. "
                                  "Shorten it or raise n_ctx.")
        budget = min(params.max_new_tokens, self.n_ctx - len(ids))

        def decode(tokens: list[int]) -> str:
            return self.llm.detokenize(tokens, special=False).decode("utf-8", "replace")

        stream = TextStream(decode, params.stop)
        with self.lock:
            self.llm.reset()
            self.llm.eval(ids)

            def step(token: int):
                self.llm.eval([token])
                return self._logits()

            yield from decode_loop(step, self._logits(), len(ids), stream, self.stop_ids, params,
                                    t0, cancel, budget)

    def close(self) -> None:
        """Free the model now; llama.cpp's destructor misbehaves at interpreter exit."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
            atexit.unregister(self.close)
