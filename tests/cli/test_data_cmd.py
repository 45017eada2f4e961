"""`tuneloop data …` through typer's CliRunner, against the command group itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuiapp.cli import data_cmd

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
GOOD, BAD = FIXTURES / "good", FIXTURES / "bad"


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(data_cmd.app, [str(a) for a in args], obj={"home": str(tmp_path / "home")})

    return invoke


@pytest.fixture(scope="module")
def word_tokenizer_file(tmp_path_factory):
    """tokenizer.json of a word-level tokenizer: one token per word or punctuation mark."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_validate_good_file(run):
    result = run("validate", GOOD / "messages.jsonl")
    assert result.exit_code == 0, result.output
    assert "✓" in result.output and "3 rows (messages, sft, jsonl)" in result.output


def test_validate_bad_file_lists_located_problems(run):
    result = run("validate", BAD / "unknown_role.jsonl")
    assert result.exit_code == 1
    assert f"{BAD / 'unknown_role.jsonl'}:2: messages[1].role: unknown role" in result.output
    assert "Traceback" not in result.output


def test_validate_json(run):
    result = run("validate", BAD / "csv_quoted_newlines.csv", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["errors"] == 1 and data["stats"] is None
    assert data["problems"][0] | {"path": None} == {
        "path": None, "line": 5, "unit": "line", "field": "completion", "message": "is empty",
        "severity": "error"}


def test_validate_shows_at_most_fifty_problems(run, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": 3}\n' * 80)
    result = run("validate", f)
    assert result.exit_code == 1
    assert result.output.count(": text: must be a string") == data_cmd.MAX_SHOWN
    assert "… and 30 more errors" in result.output


def test_usage_errors_exit_2(run, tmp_path):
    result = run("validate", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = run("validate", GOOD / "text.jsonl", "--kind", "rlhf")
    assert result.exit_code == 2 and "expected one of: sft, preference" in result.output
    result = run("validate", GOOD / "text.jsonl", "--tokenizer", tmp_path / "nope")
    assert result.exit_code == 2 and "cannot load the tokenizer" in result.output


def test_validate_wrong_kind(run):
    result = run("validate", GOOD / "messages.jsonl", "--kind", "preference")
    assert result.exit_code == 1
    assert "this is messages data (for sft jobs) but preference data was asked for" in \
        result.output


def test_validate_warns_when_truncation_leaves_nothing_to_learn(run, tmp_path,
                                                                  word_tokenizer_file):
    f = tmp_path / "long.jsonl"
    long_prompt = " ".join(["word"] * 30)
    f.write_text(json.dumps({"messages": [{"role": "user", "content": long_prompt},
                                          {"role": "assistant", "content": "ok"}]}) + "\n")
    result = run("validate", f, "--max-length", "16", "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0, result.output  # a warning, not an error
    assert "1 example(s) would train on nothing at max_length 16" in result.output
    result = run("validate", f, "--max-length", "64", "--tokenizer", word_tokenizer_file,
                 "--json")
    data = json.loads(result.stdout)
    assert data["warnings"] == 0 and data["stats"]["tokens"]["max"] == 30 + 3 + 4  # + ChatML markers


def test_stats(run, word_tokenizer_file):
    result = run("stats", GOOD / "preference.jsonl", "--tokenizer", word_tokenizer_file,
                 "--max-length", "5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"]["format"] == "preference"
    assert data["stats"]["rows"] == 2 and data["stats"]["preference"]["chosen_truncated"] == 1
    result = run("stats", GOOD / "messages.jsonl", "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0
    assert "tokens" in result.output and "role assistant" in result.output


def test_stats_on_a_file_with_errors_says_rows_were_left_out(run, word_tokenizer_file):
    result = run("stats", BAD / "completion_empty.jsonl", "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0
    assert "1 row(s) with errors are left out" in result.output


def test_import_then_reimport_then_list(run, tmp_path, word_tokenizer_file):
    src = tmp_path / "chat.jsonl"
    src.write_bytes((GOOD / "messages.jsonl").read_bytes())
    result = run("import", src, "--name", "my-chat", "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0, result.output
    assert "imported my-chat as version" in result.output and "3 rows, messages (sft)" in \
        result.output

    again = run("import", src, "--name", "my-chat", "--json")
    assert again.exit_code == 0, again.output
    version = json.loads(again.stdout)
    assert version["already_imported"] is True and version["rows"] == 3
    # the version points at a private copy, so editing the source cannot change it
    copy = Path(version["path"])
    assert copy.read_bytes() == src.read_bytes() and copy.parent.parent.name == "datasets"
    assert version["source"] == str(src.resolve())

    src.write_text(src.read_text() + json.dumps({"messages": [
        {"role": "user", "content": "new"}, {"role": "assistant", "content": "row"}]}) + "\n")
    newer = run("import", src, "--name", "my-chat", "--json")
    assert json.loads(newer.stdout)["id"] != version["id"]

    listed = run("list", "--name", "my-chat", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert sorted(r["rows"] for r in rows) == [3, 4]
    table = run("list")
    assert table.exit_code == 0 and "my-chat" in table.output


def test_import_refuses_bad_data(run):
    result = run("import", BAD / "preference_identical.jsonl", "--name", "bad")
    assert result.exit_code == 1
    assert "chosen and rejected are identical" in result.output
    assert "not imported" in result.output
    listed = run("list", "--name", "bad", "--json")
    assert json.loads(listed.stdout) == []


REAL = FIXTURES.parent / "real_formats"


def test_import_skip_invalid_leaves_rows_out_and_lists_them(run, tmp_path, word_tokenizer_file):
    src = REAL / "hh_rlhf.jsonl"
    refused = run("import", src, "--name", "hh")
    assert refused.exit_code == 1
    assert "--skip-invalid to leave the 1 invalid row(s) out" in refused.output
    assert json.loads(run("list", "--name", "hh", "--json").stdout) == []

    result = run("import", src, "--name", "hh", "--skip-invalid", "--json",
                 "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0, result.output
    version = json.loads(result.stdout)
    assert version["rows"] == 3 and version["kind"] == "preference"
    assert "leaving out 1 invalid row(s) of 4 (lines 3)" in result.stderr

    from store import Store
    from tuiapp.engine.data import validate

    store = Store(tmp_path / "home" / "tuneloop.db")
    stored = store.get_dataset_version(version["id"])
    assert stored.stats["skipped"]["lines"] == [3] and stored.stats["skipped"]["count"] == 1
    assert stored.lineage["skipped_invalid"]["lines"] == [3]
    # the version's own file holds only rows that validate, as the same kind
    again = validate(stored.path, kind="preference")
    assert again.ok and len(again.records) == 3
    assert again.records[0]["prompt"].endswith("\n\nAssistant:")

    twice = run("import", src, "--name", "hh", "--skip-invalid", "--json")
    assert json.loads(twice.stdout)["already_imported"] is True


def test_skip_invalid_cannot_rescue_a_file_with_no_usable_row(run):
    result = run("import", REAL / "images.json", "--name", "img", "--skip-invalid")
    assert result.exit_code == 1
    assert "no row is usable" in result.output
    assert "multimodal rows are not supported" in result.output


def test_skip_invalid_cannot_rescue_a_broken_file(run):
    result = run("import", BAD / "json_array_missing_comma.json", "--name", "x", "--skip-invalid")
    assert result.exit_code == 1
    assert "cannot be read whole" in result.output


def test_stats_exits_non_zero_when_no_row_is_usable(run):
    result = run("stats", REAL / "images.json")
    assert result.exit_code == 1
    assert "no usable row" in result.output
    as_json = run("stats", REAL / "images.json", "--json")
    assert as_json.exit_code == 1


def test_stats_show_the_document_count_of_a_text_file(run, word_tokenizer_file):
    result = run("stats", REAL / "long_lines.txt", "--tokenizer", word_tokenizer_file)
    assert result.exit_code == 0, result.output
    assert "documents" in result.output and "4" in result.output
