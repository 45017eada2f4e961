"""Generation backends: one loaded transformers base with LoRA adapters hot-swapped, and llama.cpp
for GGUF files. Both stream ``Chunk``s from a manual decode loop with a KV cache, so per-token
timing and stop handling are exact and both use the same sampler (see generate_common).

Thread-safety: a backend runs one generation at a time. ``generate`` takes the backend's lock
when the iterator starts and releases it when the iterator finishes or is closed, so several
threads (one per compare pane) may share a backend and simply take turns; every answer from
adapters on one base shares that base's lock. Always exhaust or ``close()`` the iterator (or use
``cancel``, a threading.Event checked between tokens) so the lock is released promptly.

torch / transformers / peft / llama_cpp are imported inside the backends: importing is free.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuiapp.engine.infer.llama_backend import LlamaCppBackend
from tuiapp.engine.infer.params import (
    STOP_TOKEN_TEXTS,
    Chunk,
    GenerationError,
    GenerationParams,
    TextStream,
    decode_loop,
    messages_for,
)

__all__ = ["Chunk", "GenerationError", "GenerationParams", "TransformersBackend", "LlamaCppBackend",
           "model_fingerprint"]


# ------------------------------------------------------------------ adapters and bases


def model_fingerprint(folder: str | Path) -> str:
    """A cheap identity of a model folder: its config's shape keys, its tensor headers and the
    first and last 64 KiB of each weights file. Two different random inits or a fine-tuned copy
    differ; copying the folder elsewhere does not."""
    folder = Path(folder)
    h = hashlib.sha256()
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        keys = ("architectures", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                "num_attention_heads", "num_key_value_heads")
        h.update(json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True).encode())
    for f in sorted(folder.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f.name.encode() + str(size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(65536))
            fh.seek(max(0, size - 65536))
            h.update(fh.read(65536))
    return h.hexdigest()


def adapter_base(adapter_dir: Path) -> str | None:
    cfg = adapter_dir / "adapter_config.json"
    if not cfg.exists():
        raise GenerationError(f"{adapter_dir}: no adapter_config.json; this is not a LoRA adapter folder.")
    return json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")


def _merge_in_memory(model, adapters: tuple[Path, ...]):
    """The start model of an aligned run: each adapter merged into the weights, in order."""
    from peft import PeftModel

    for folder in adapters:
        try:
            model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise GenerationError(f"cannot merge the start adapter {folder}: {first}") from None
    return model


def cpu_generation_threads() -> int:
    """Torch threads for CPU generation: OMP_NUM_THREADS when the user set it; else 1 on a box of
    2 cores or fewer (token-by-token decoding of a small model is Python-bound, and a second
    thread on a busy 2-core machine was measured 25x slower), else min(4, cores // 2)."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


class TransformersBackend:
    """One base model loaded once; ``adapter=None`` answers as the base (adapters disabled), an
    adapter folder answers as that run. Up to ``adapter_cache_size`` adapters stay loaded; the
    least recently used one is deleted beyond that.

    ``merge_adapters``: adapters merged into the base in memory first (an aligned run's SFT start);
    the backend then stands for that start model, and its runs' adapters are swapped on top.

    PEFT holds one adapter type per loaded model: the first adapter's type (LoRA and DoRA, IA3,
    prefix or prompt tuning) hot-swaps here; an adapter of another type is loaded separately, on
    a second copy of the base (``_side_backend``), and its answers say so in ``meta``."""

    def __init__(self, base_dir: str | Path, load_in_4bit: bool = False, device: str = "auto",
                 adapter_cache_size: int = 4, dtype: str = "auto", merge_adapters=()):
        from transformers import AutoModelForCausalLM

        from tuiapp.engine.train import modeling

        if adapter_cache_size < 1:
            raise GenerationError("adapter_cache_size must be at least 1")
        self._options = dict(base_dir=base_dir, load_in_4bit=load_in_4bit, device=device, dtype=dtype,
                             adapter_cache_size=adapter_cache_size, merge_adapters=merge_adapters)
        self.peft_type: str | None = None     # the PEFT type of the adapters hot-swapped here
        self._side: dict[str, TransformersBackend] = {}   # other types, each on its own base copy
        self._group_lock = threading.Lock()
        self.base_dir = Path(base_dir).resolve()
        if not (self.base_dir / "config.json").exists():
            raise GenerationError(f"{self.base_dir} is not a Hugging Face model folder (no config.json)")
        self.device = modeling.pick_device(device)
        if self.device == "cpu":
            import torch

            torch.set_num_threads(cpu_generation_threads())
        torch_dtype = modeling.pick_dtype(dtype, self.device)
        self.tokenizer = modeling.load_tokenizer(str(self.base_dir))
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if load_in_4bit:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise GenerationError("load_in_4bit needs bitsandbytes (pip install bitsandbytes)") from None
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch_dtype)
            kwargs["device_map"] = {"": self.device if self.device == "cpu" else 0}
        try:
            model = AutoModelForCausalLM.from_pretrained(str(self.base_dir), **kwargs)
        except (OSError, ValueError) as exc:
            raise GenerationError(f"cannot load the model {self.base_dir}: {exc}") from None
        if not load_in_4bit:
            model.to(self.device)
        if len(self.tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(self.tokenizer))
        self.merged = tuple(Path(a).resolve() for a in merge_adapters)
        if self.merged:
            if load_in_4bit:
                raise GenerationError("an aligned run's start adapter cannot be merged into a 4-bit base; "
                                      "load it without load_in_4bit")
            model = _merge_in_memory(model, self.merged)
        self.model = model.eval()
        self.peft = None                      # the PeftModel wrapping self.model once an adapter loads
        self.adapters: OrderedDict[str, str] = OrderedDict()   # adapter path -> adapter name, LRU order
        self.cache_size = adapter_cache_size
        self.lock = threading.Lock()
        self._names = 0
        self._fingerprint: str | None = None
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.stop_ids = self._stop_ids()
        self._run_templates: dict[str, Any] = {}  # adapter folder -> run_tokenizer.RunTemplate

    def _stop_ids(self) -> set[int]:
        tok, ids = self.tokenizer, set()
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or []))
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in STOP_TOKEN_TEXTS if t in vocab)
        return ids

    # ---- adapters

    def _check_base(self, adapter_dir: Path) -> None:
        recorded = adapter_base(adapter_dir)
        if not recorded or not Path(recorded).is_dir():
            return  # a hub id or a moved folder: the shape check at load time is what remains
        theirs = Path(recorded).resolve()
        if theirs == self.base_dir:
            return
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.base_dir)
        if model_fingerprint(theirs) != self._fingerprint:
            raise GenerationError(
                f"the adapter {adapter_dir} was trained on {theirs}, not on {self.base_dir}; "
                "its answers on this base would mean nothing. Load it on its own base.")

    def loaded_adapters(self) -> list[str]:
        """Adapter folders currently loaded, least recently used first (then those of other
        PEFT types, loaded separately)."""
        return list(self.adapters) + [a for side in self._side.values() for a in side.loaded_adapters()]

    def _side_backend(self, adapter: str | Path):
        """None when ``adapter`` hot-swaps on this base (its PEFT type is the one loaded here, or
        nothing is loaded yet); else the backend of its type on a second copy of the base: PEFT
        cannot put an IA3 or prefix/prompt-tuning adapter beside LoRA ones on one model."""
        from tuiapp.engine.train.methods import adapter_type

        kind = adapter_type(Path(adapter)) or "LORA"
        with self._group_lock:
            if self.peft_type in (None, kind):
                self.peft_type = kind
                return None
            if kind not in self._side:
                self._side[kind] = TransformersBackend(**self._options)
            return self._side[kind]

    def _activate(self, adapter: str | Path) -> None:
        key = str(Path(adapter).resolve())
        if key in self.adapters:
            self.adapters.move_to_end(key)
            self.peft.set_adapter(self.adapters[key])
            return
        path = Path(key)
        self._check_base(path)
        self._names += 1
        name = f"adapter{self._names}"
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(self.model, key, adapter_name=name, is_trainable=False)
                self.peft.eval()
            else:
                self.peft.load_adapter(key, adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise GenerationError(f"the adapter {path} does not fit the base {self.base_dir} "
                                  f"(trained on another base?): {first}") from None
        self.peft.set_adapter(name)
        self.adapters[key] = name
        while len(self.adapters) > self.cache_size:
            _, oldest = self.adapters.popitem(last=False)
            self.peft.delete_adapter(oldest)

    # ---- generation

    def run_template(self, adapter: str | Path | None):
        """The chat template (and its stop ids) the run in ``adapter`` trained with
        (run_tokenizer.py); None for the base."""
        if adapter is None:
            return None
        from tuiapp.engine.infer.run_tokenizer import run_template

        key = str(Path(adapter).resolve())
        if key not in self._run_templates:
            self._run_templates[key] = run_template(self.tokenizer, key)
        return self._run_templates[key]

    def prompt_ids(self, prompt: str | list[dict], params: GenerationParams,
                   system: str | None = None, adapter: str | Path | None = None) -> list[int]:
        """The ids the model answers after: rendered with the template of the run in ``adapter``
        when it trained with another template than the base's."""
        tok = self.tokenizer
        if not params.chat:
            return list(tok(str(prompt), add_special_tokens=True)["input_ids"])
        run = self.run_template(adapter)
        text = tok.apply_chat_template(messages_for(prompt, system), tokenize=False, add_generation_prompt=True,
                                       chat_template=run.template if run else None)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def generate(self, adapter: str | Path | None, prompt: str | list[dict],
                 params: GenerationParams | None = None, *, system: str | None = None,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Stream an answer as the base (``adapter=None``) or as the adapter in that folder."""
        import contextlib

        import torch

        params = params or GenerationParams()
        t0 = time.perf_counter()
        ids = self.prompt_ids(prompt, params, system, adapter)
        run = self.run_template(adapter)
        stop_ids = self.stop_ids | run.stop_ids if run else self.stop_ids
        budget = params.max_new_tokens
        if self.max_positions:
            if len(ids) >= self.max_positions:
                raise GenerationError(f"the prompt is {len(ids)} tokens; the model takes at most "
                                      f"{self.max_positions}. Shorten it.")
            budget = min(budget, self.max_positions - len(ids))
        side = self._side_backend(adapter) if adapter is not None else None
        if side is not None:
            from tuiapp.engine.train.methods import method_words

            for chunk in side.generate(adapter, prompt, params, system=system, cancel=cancel):
                if chunk.done:
                    chunk.meta["loaded_separately"] = (
                        f"{method_words(side.peft_type)} adapters run on their own copy of the base: "
                        f"PEFT keeps one adapter type per model and {method_words(self.peft_type)} "
                        "adapters are loaded on this one")
                yield chunk
            return
        stream = TextStream(lambda t: self.tokenizer.decode(t, skip_special_tokens=True), params.stop)
        with self.lock:
            if adapter is None:
                model = self.peft if self.peft is not None else self.model
                scope = self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()
            else:
                self._activate(adapter)
                model, scope = self.peft, contextlib.nullcontext()
            step_model = model
            if adapter is not None and self.peft.active_peft_config.is_prompt_learning:
                # PEFT puts the virtual tokens / prefix in front on every call; once they are in
                # the KV cache the following tokens go through the plain model.
                step_model = self.peft.get_base_model()
            with scope, torch.inference_mode():
                state: dict[str, Any] = {"past": None}

                def forward(tokens: list[int], net):
                    x = torch.tensor([tokens], device=self.device)
                    out = net(input_ids=x, past_key_values=state["past"], use_cache=True)
                    state["past"] = out.past_key_values
                    return out.logits[0, -1].float().cpu().numpy()

                yield from decode_loop(lambda tok: forward([tok], step_model), forward(ids, model), len(ids),
                                        stream, stop_ids, params, t0, cancel, budget)

    def close(self) -> None:
        for side in self._side.values():
            side.close()
        self._side.clear()
        self.peft = None
        self.model = None
        self.adapters.clear()


# ------------------------------------------------------------------ the facade


class Generator:
    """REFs in, streamed answers out, every finished answer stored.

    One TransformersBackend per base folder (so "base" and any number of runs on it share one
    loaded model and one lock) and one LlamaCppBackend per GGUF file. ``backend_factory(kind,
    path)`` replaces how backends are built (tests inject scripted ones).
    """

    def __init__(self, store: Any, home: str | Path | None = None, *, base_dir: str | Path | None = None,
                 device: str = "auto", load_in_4bit: bool = False, adapter_cache_size: int = 4,
                 n_ctx: int = 2048, n_threads: int | None = None, backend_factory=None):
        self.store = store
        self.home = Path(home) if home else None
        self.base_dir = base_dir
        self._options = dict(device=device, load_in_4bit=load_in_4bit, adapter_cache_size=adapter_cache_size)
        self._gguf_options = dict(n_ctx=n_ctx, n_threads=n_threads)
        self._factory = backend_factory
        self._backends: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # guards the backend table, not the generations

    def resolve(self, ref: str):
        from tuiapp.engine.infer.model_refs import resolve_ref

        return resolve_ref(ref, self.store, self.base_dir, home=self.home)

    def backend_for(self, model_ref) -> Any:
        """One backend per GGUF file, and one per (base folder, adapters merged into it): an
        aligned run's SFT start is a different model from the plain base."""
        kind, path = ("gguf", str(model_ref.gguf_path)) if model_ref.kind == "gguf" else ("hf", str(model_ref.base_dir))
        merges = tuple(str(m) for m in getattr(model_ref, "merge_dirs", ()) or ())
        dtype = self._run_dtype(model_ref) if kind == "hf" else "auto"
        key = (kind, path, merges) + ((dtype,) if dtype != "auto" else ())
        with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                if self._factory is not None:
                    backend = self._factory(kind, path, *([merges] if merges else []))
                elif kind == "gguf":
                    backend = LlamaCppBackend(path, **self._gguf_options)
                else:
                    backend = TransformersBackend(path, **self._options, dtype=dtype, merge_adapters=merges)
                self._backends[key] = backend
            return backend

    def _run_dtype(self, model_ref) -> str:
        """A run's model answers in the dtype it trained in (its config's, auto included: the
        same modeling.auto_dtype pick), so Compare/eval/labels see what training saw."""
        run_id = getattr(model_ref, "run_id", None)
        if run_id is None or self.store is None:
            return "auto"
        try:
            config = self.store.get_run(run_id).config or {}
        except Exception:  # noqa: BLE001 - a run the store no longer has answers in auto
            return "auto"
        dtype = config.get("dtype", "auto")
        return dtype if dtype in ("auto", "fp32", "bf16", "fp16") else "auto"

    def generate(self, ref, prompt: str | list[dict], params: GenerationParams | None = None, *,
                 system: str | None = None, cancel: threading.Event | None = None,
                 store_result: bool = True) -> Iterator[Chunk]:
        """Stream the answer of ``ref`` (a REF string or a resolved ModelRef). The final chunk's
        ``meta`` carries the ref, label and (when stored) the generation id."""
        model_ref = self.resolve(ref) if isinstance(ref, str) else ref
        params = params or GenerationParams()
        backend = self.backend_for(model_ref)
        adapter = model_ref.adapter_dir if model_ref.kind == "adapter" else None
        for chunk in backend.generate(adapter, prompt, params, system=system, cancel=cancel):
            if chunk.done:
                chunk.meta.update(ref=model_ref.ref, label=model_ref.label)
                if store_result and self.store is not None:
                    text_prompt = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
                    row = self.store.add_generation(
                        model_ref.ref, text_prompt, chunk.text,
                        params={**params.to_dict(), "finish_reason": chunk.finish_reason,
                                "tokens_per_s": chunk.tokens_per_s, "first_token_s": chunk.first_token_s},
                        latency_s=chunk.latency_s, tokens=chunk.tokens, system=system,
                        run_id=model_ref.run_id)
                    chunk.meta["generation_id"] = row.id
            yield chunk

    def complete(self, ref, prompt: str | list[dict], params: GenerationParams | None = None, *,
                 system: str | None = None, store_result: bool = True) -> Chunk:
        """The final chunk of a whole generation (no streaming)."""
        final = None
        for chunk in self.generate(ref, prompt, params, system=system, store_result=store_result):
            final = chunk
        return final

    def close(self) -> None:
        with self._lock:
            for backend in self._backends.values():
                close = getattr(backend, "close", None)
                if close:
                    close()
            self._backends.clear()
