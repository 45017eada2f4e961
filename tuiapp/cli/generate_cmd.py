"""``tuneloop generate --model REF --prompt TEXT``: one answer, streamed or whole, stored.

Mounted as a single command: ``app.command("generate")(generate_cmd.generate)`` in ``__main__``.
The answer goes to stdout (tokens as they come with --stream); the figures (tokens/s, latency)
go to stderr so stdout stays the answer alone. Exit 2 for a REF or setting that leads nowhere,
1 when the model fails to load or generate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tuiapp.cli.common import fail, open_ws, print_json, quiet_transformers

REF_HELP = ("'base', a run id (7 or run:7), model:<id>, a model or adapter folder, or a .gguf file")


def make_params(max_new_tokens: int, temperature: float, top_p: float, seed: int, stop: list[str] | None):
    from tuiapp.engine.infer.params import GenerationError, GenerationParams

    try:
        return GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                seed=seed, stop=tuple(stop or ()))
    except GenerationError as exc:
        fail(str(exc), code=2)


def open_generator(ctx: typer.Context, base: Path | None, device: str):
    """The workspace's store behind a Generator (``base`` overrides what REF 'base' means)."""
    from tuiapp.engine.infer.generate import Generator

    quiet_transformers()  # generate and eval show their own figures, not loading bars
    ws = open_ws(ctx)
    return Generator(ws.store, ws.home, base_dir=base, device=device), ws


def figures(final) -> str:
    rate = f"{final.tokens_per_s:.1f} tokens/s" if final.tokens_per_s else "no tokens"
    first = f", first token {final.first_token_s:.2f} s" if final.first_token_s is not None else ""
    return (f"{final.tokens} tokens in {final.latency_s:.2f} s ({rate}{first}; "
            f"stopped: {final.finish_reason})")


def generate(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help=f"Which model answers: {REF_HELP}."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message (or raw text with --raw)."),
    system: str | None = typer.Option(None, "--system", help="A system prompt."),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they come."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 is greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling share (with temperature > 0)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same answer)."),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    raw: bool = typer.Option(False, "--raw", help="Continue the prompt as plain text, no chat template."),
    base: Path | None = typer.Option(None, "--base", help="The folder REF 'base' stands for "
                                     "(default: the demo base model)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (transformers models)."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer and its figures as JSON."),
) -> None:
    """Answer one prompt with a model (base, a run, a folder or a GGUF file); the answer is stored."""
    from tuiapp.engine.infer.gguf_file import GGUFFileError
    from tuiapp.engine.infer.model_refs import RefError
    from tuiapp.engine.infer.params import GenerationError

    params = make_params(max_new_tokens, temperature, top_p, seed, stop)
    params.chat = not raw
    gen, _ = open_generator(ctx, base, device)
    try:
        model_ref = gen.resolve(model)
    except RefError as exc:
        fail(str(exc), code=2)
    final = None
    try:
        for chunk in gen.generate(model_ref, prompt, params, system=system):
            if chunk.done:
                final = chunk
            elif stream and not as_json:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
    except (GenerationError, GGUFFileError) as exc:
        fail(str(exc), code=1)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"generation with {model_ref.label} failed: {type(exc).__name__}: {exc}", code=1)
    finally:
        gen.close()
    if as_json:
        print_json({"model": model_ref.ref, "label": model_ref.label, "text": final.text,
                    "tokens": final.tokens, "prompt_tokens": final.prompt_tokens,
                    "latency_s": final.latency_s, "first_token_s": final.first_token_s,
                    "tokens_per_s": final.tokens_per_s, "finish_reason": final.finish_reason,
                    "generation_id": final.meta.get("generation_id"), "params": params.to_dict()})
        return
    sys.stdout.write(("" if stream else final.text) + "\n")
    sys.stdout.flush()
    typer.echo(f"{model_ref.label}: {figures(final)}", err=True)
