"""The demo world's files: writing every file of ``sample_data/demo/`` from the seed, the manifest
a fresh workspace is seeded from, checking a folder against a fresh build, and ``demo info``.

Imports the world, its texts and tokenizer, and the dataset room (to validate what it wrote);
nothing imports this module but the CLI, the workspace and tests.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tuiapp.demo import texts as demo_texts
from tuiapp.demo import tokenizer as demo_tokenizer
from tuiapp.demo.world import (
    DEFAULT_SEED,
    FORBIDDEN_QUESTIONS,
    VOCAB,
    World,
    answer_text,
    build_world,
    question,
)
from tuiapp.engine import data


def demo_dir() -> Path:
    from tuiapp.paths import DEMO_DIR

    return DEMO_DIR


DATA_FILES = (
    "corpus.txt", "sft.jsonl", "eval_heldout.jsonl", "eval_forbidden.jsonl",
    "preferences.jsonl", "kto.jsonl", "world.json",
)
TOKENIZER_FILES = (
    "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
)
MANIFEST = "manifest.json"
GENERATED_FILES = DATA_FILES + TOKENIZER_FILES + (MANIFEST,)
# The datasets a fresh workspace registers; the manifest records what validation says of each
# (format, kind, rows) with its sha256, so seeding a new home needs no parsing before first paint.
DATASET_FILES = (
    "corpus.txt", "sft.jsonl", "preferences.jsonl", "kto.jsonl",
    "eval_heldout.jsonl", "eval_forbidden.jsonl",
)


def generate_demo(out_dir: str | Path | None = None, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Write every demo file into ``out_dir`` (default ``sample_data/demo``); relpath -> path.

    Only the files in GENERATED_FILES are written; anything else there (a base model) is kept.
    """
    out = Path(out_dir) if out_dir is not None else demo_dir()
    world = build_world(seed)
    texts = demo_texts.render_all(world)
    texts["world.json"] = json.dumps(world.to_dict(), indent=1, ensure_ascii=False) + "\n"
    texts.update(demo_tokenizer.build_tokenizer_files(demo_texts.tokenizer_training_texts(texts)))
    written: dict[str, Path] = {}
    for rel in DATA_FILES + TOKENIZER_FILES:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(texts[rel].encode("utf-8"))
        written[rel] = path
    manifest = build_manifest(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written[MANIFEST] = out / MANIFEST
    return written


def build_manifest(folder: Path) -> dict[str, dict]:
    """What the dataset layer says of each demo dataset, keyed by file name."""
    out = {}
    for rel in DATASET_FILES:
        report = data.validate(folder / rel)
        if not report.ok:
            raise ValueError(f"generated demo file {rel} does not validate: {report.errors[0]}")
        out[rel] = {
            "format": report.format,
            "kind": report.kind,
            "rows": report.rows,
            "sha256": data.content_hash(folder / rel),
        }
    return out


def check_demo(target_dir: str | Path | None = None, seed: int = DEFAULT_SEED) -> list[str]:
    """Regenerate into a temp dir; the relpaths that are missing or differ in ``target_dir``."""
    target = Path(target_dir) if target_dir is not None else demo_dir()
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-demo-"))
    try:
        fresh = generate_demo(tmp, seed)
        return [
            rel for rel, path in fresh.items()
            if not (target / rel).is_file() or (target / rel).read_bytes() != path.read_bytes()
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(world: World, files_dir: str | Path | None = None) -> dict[str, Any]:
    """What ``tuneloop demo info`` prints: counts, split, file sizes, a sample fact/question."""
    sample = world.split("sft")[0]
    held = world.split("heldout")[0]
    info: dict[str, Any] = {
        "seed": world.seed,
        "entities": len(world.entities),
        "split": {"sft": len(world.split("sft")), "heldout": len(world.split("heldout"))},
        "attributes": {k: len(v) for k, v in VOCAB.items()},
        "sample_entity": asdict(sample),
        "sample_question": question("colour", sample.name, 0),
        "sample_answer": answer_text(sample.colour),
        "sample_heldout_question": question("town", held.name, 1),
        "sample_forbidden": FORBIDDEN_QUESTIONS[0].format(n=held.name),
    }
    if files_dir is not None:
        base = Path(files_dir)
        info["files"] = {
            rel: (base / rel).stat().st_size for rel in GENERATED_FILES if (base / rel).is_file()
        }
    return info
