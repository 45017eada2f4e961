"""The real Engine facade over the dataset layer (no fakes): listing, validating, importing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuiapp import paths
from tuiapp.engine.facade import DatasetImportError, Engine


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"question {i}?"},
            {"role": "assistant", "content": f"answer {i}."},
        ]
    }


def test_list_workspace_files_has_home_files_then_demo_files(tmp_path):
    home = tmp_path / "home"
    (home / "datasets" / "nested").mkdir(parents=True)
    mine = write_jsonl(home / "datasets" / "mine.jsonl", [chat(1)])
    nested = write_jsonl(home / "datasets" / "nested" / "more.jsonl", [chat(2)])
    (home / "datasets" / "notes.md").write_text("not data")
    saved = home / "datasets" / "saved"
    saved.mkdir()
    (saved / "dataset_info.json").write_text("{}")
    (saved / "state.json").write_text("{}")
    files = Engine().list_workspace_files(home)
    assert files[:3] == [mine, nested, saved]  # the save_to_disk folder is one entry
    assert all(p.parent == paths.DEMO_DIR for p in files[3:])
    assert {p.suffix for p in files[3:]} <= {".jsonl", ".txt"}


def test_import_refuses_errors_and_records_a_clean_file(tmp_path):
    from store import Store

    store = Store(":memory:")
    engine = Engine(tokenizer_path=tmp_path / "no-tokenizer")  # unloadable: error kept
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat(1), {"messages": "not a list"}])
    with pytest.raises(DatasetImportError) as refused:
        engine.import_dataset(store, bad, "bad")
    assert "bad.jsonl has 1 error(s)" in str(refused.value)
    assert ":2" in str(refused.value)  # names the line
    assert store.list_dataset_versions() == []

    good = write_jsonl(tmp_path / "good.jsonl", [chat(i) for i in range(5)])
    version = engine.import_dataset(store, good, "good")
    assert (version.name, version.rows, version.kind, version.format) == (
        "good",
        5,
        "sft",
        "messages",
    )
    assert version.stats["rows"] == 5
    again = engine.import_dataset(store, good, "good")
    assert again.id == version.id  # same bytes, same name: the same version
    assert engine.tokenizer_error  # said why token counts are approximate


def test_validate_and_examples_go_through_the_dataset_layer(tmp_path):
    engine = Engine(tokenizer_path=tmp_path / "no-tokenizer")
    report = engine.validate(write_jsonl(tmp_path / "d.jsonl", [chat(1), chat(2)]))
    assert report.ok and report.rows == 2
    examples = engine.render_examples(report, n=1)
    assert len(examples) == 1 and "answer 1." in examples[0]
    stats = engine.stats(report, max_length=4)
    assert stats["rows"] == 2 and stats["truncated"]["count"] == 2
