"""Validation of the dataset layer against good and malformed fixtures.

Every malformed case names the exact line (or row) and field the first error must point at, so a
regression that reports the right problem in the wrong place fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuiapp.engine.data import FORMATS, KINDS, Problem, content_hash, validate
from tuiapp.engine.data.types import MAX_PROBLEMS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
GOOD, BAD = FIXTURES / "good", FIXTURES / "bad"

# (file, format, kind, rows)
GOOD_CASES = [
    ("messages.jsonl", "messages", "sft", 3),
    ("messages_bom_crlf.jsonl", "messages", "sft", 2),
    ("messages.tsv", "messages", "sft", 1),
    ("sharegpt.jsonl", "sharegpt", "sft", 2),
    ("alpaca.json", "alpaca", "sft", 3),
    ("prompt_completion.csv", "prompt_completion", "sft", 3),
    ("prompt_completion_conv.jsonl", "prompt_completion", "sft", 1),
    ("text.jsonl", "text", "text", 2),
    ("text_array.jsonl", "text", "text", 2),  # a JSON array saved as .jsonl
    ("corpus.txt", "text", "text", 3),
    ("preference.jsonl", "preference", "preference", 2),
    ("preference_implicit.jsonl", "preference_messages", "preference", 1),
    ("preference_messages.json", "preference_messages", "preference", 2),
    ("kto.jsonl", "kto", "kto", 2),
    ("kto.csv", "kto", "kto", 3),
    ("prompt_only.jsonl", "prompt_only", "prompt", 2),
]

# (file, kind asked, line, field, substring of the message) of the first problem
BAD_CASES = [
    ("invalid_json.jsonl", None, 2, None, "invalid JSON at column 15"),
    ("two_objects.jsonl", None, 3, None, "several JSON values on one line"),
    ("trailing_garbage.jsonl", None, 1, None, "unexpected text after the object"),
    ("non_object_row.jsonl", None, 2, None, "row is an array"),
    ("string_row.jsonl", None, 1, None, "row is a string"),
    ("arrays_as_rows.jsonl", None, 1, None, "row is an array"),
    ("unknown_keys.jsonl", None, 2, None, "no known format has these keys ('question', 'reply')"),
    ("missing_content.jsonl", None, 1, "messages[1].content", "missing key 'content'"),
    ("missing_role.jsonl", None, 1, "messages[0].role", "missing key 'role'"),
    ("unknown_role.jsonl", None, 2, "messages[1].role",
     'unknown role "bot"; expected one of: system, user, assistant'),
    ("role_case.jsonl", None, 1, "messages[0].role", "roles are lower-case: 'user'"),
    ("tool_role.jsonl", None, 1, "messages[2].role",
     "a tool result must follow an assistant turn with tool_calls"),
    ("non_alternating.jsonl", None, 3, "messages[1].role", "two user turns in a row"),
    ("starts_with_assistant.jsonl", None, 1, "messages[1].role", "must start with a user turn"),
    ("system_not_first.jsonl", None, 1, "messages[2].role", "only allowed as the first message"),
    ("no_assistant.jsonl", None, 1, "messages", "has no assistant turn"),
    ("empty_assistant.jsonl", None, 2, "messages[1].content", "assistant turn is empty"),
    ("empty_messages_list.jsonl", None, 1, "messages", "is an empty list"),
    ("messages_not_list.jsonl", None, 1, "messages", "must be a list of {role, content} objects"),
    ("message_not_object.jsonl", None, 1, "messages[1]", "must be an object with 'role'"),
    ("null_content.jsonl", None, 1, "messages[1].content", "is null; expected a string"),
    ("number_content.jsonl", None, 1, "messages[0].content", "must be a string, got a number 42"),
    ("content_parts_bad.jsonl", None, 1, "messages[0].content[0]", "(multimodal) is not supported"),
    ("nested_wrong_type.jsonl", None, 1, "conversations[0].value", "got an array"),
    ("sharegpt_unknown_from.jsonl", None, 1, "conversations[1].from",
     'unknown speaker "bot"; expected one of: system, human, user, gpt, assistant'),
    ("sharegpt_missing_value.jsonl", None, 1, "conversations[0].value", "missing key 'value'"),
    ("alpaca_missing_output.json", None, 7, "output", "found 'response': rename it to 'output'"),
    ("alpaca_null_instruction.jsonl", None, 1, "instruction", "is null"),
    ("alpaca_output_number.json", None, 3, "output", "must be a string, got a number 4"),
    ("completion_empty.jsonl", None, 2, "completion", "is empty"),
    ("prompt_completion_mixed_types.jsonl", None, 1, "completion",
     "both be strings or both be message lists"),
    ("prompt_only_empty.jsonl", None, 2, "prompt", "is empty"),
    ("text_empty.jsonl", None, 2, "text", "is empty"),
    ("text_number.jsonl", None, 1, "text", "must be a string, got a number 5"),
    ("preference_identical.jsonl", None, 1, "chosen", "chosen and rejected are identical"),
    ("preference_implicit_identical.jsonl", None, 1, "chosen", "identical"),
    ("preference_missing_rejected.jsonl", None, 2, "rejected", "missing key 'rejected'"),
    ("preference_no_shared_prompt.jsonl", None, 1, "prompt", "share no leading messages"),
    ("preference_string_no_prompt.jsonl", None, 1, "prompt", "share no common beginning"),
    ("preference_chosen_user_role.jsonl", None, 1, "chosen[0].role",
     "expected 'assistant'"),
    ("preference_prompt_ends_assistant.jsonl", None, 1, "prompt[1].role",
     "must end with a user turn"),
    ("preference_mixed_types.jsonl", None, 1, "rejected", "must all be message lists"),
    ("kto_label_string.jsonl", None, 1, "label", 'must be true or false (a boolean), got a string'),
    ("kto_label_number.jsonl", None, 2, "label", "got a number 1"),
    ("kto_missing_label.jsonl", None, 3, "label", "missing key 'label'"),
    ("kto_bad_label.csv", None, 3, "label", 'must be true or false, got "maybe"'),
    ("mixed_formats.jsonl", None, 3, None,
     "this row is alpaca but the file started as messages (line 1); 2 row(s) differ"),
    ("mixed_preference_kinds.jsonl", None, 2, None,
     "this row is preference_messages but the file started as preference"),
    ("messages_ok_for_kind.jsonl", "preference", 1, None,
     "this is messages data (for sft jobs) but preference data was asked for"),
    ("kto_missing_label_first.jsonl", "kto", 1, "label", "missing key 'label'"),
    ("prompt_only_for_sft.jsonl", "sft", 1, "completion", "missing key 'completion'"),
    ("invalid_utf8.jsonl", None, 3, None, "invalid UTF-8 byte at column 14"),
    ("invalid_utf8.csv", None, 4, None, "invalid UTF-8 byte at column 9"),
    ("txt_invalid_utf8.txt", None, 3, None, "invalid UTF-8"),
    ("empty.jsonl", None, None, None, "file is empty"),
    ("blank_only.jsonl", None, None, None, "only blank lines"),
    ("utf16.jsonl", None, None, None, "UTF-16"),
    ("csv_quoted_newlines.csv", None, 5, "completion", "is empty"),
    ("csv_ragged.csv", None, 3, None, "row has 3 cells but the header has 2 columns"),
    ("csv_unknown_header.csv", None, 2, None, "no known format has these keys"),
    ("csv_messages_bad_json.csv", None, 3, "messages", "cell is not valid JSON"),
    ("csv_duplicate_header.csv", None, 1, "prompt", "appears more than once"),
    ("json_not_array.json", None, 1, None, "top-level JSON value is an object"),
    ("json_array_missing_comma.json", None, 4, None, "expected ',' or ']'"),
    ("json_array_bad_element.json", None, 26, "messages[0].role", 'unknown role "robot"'),
    ("json_array_non_object.json", None, 3, None, "row is a number"),
    ("json_array_trailing_text.json", None, 4, None, "unexpected text after the closing ]"),
    ("json_empty_array.json", None, 1, None, "the JSON array is empty"),
    ("duplicate_key.jsonl", None, 1, "messages[0].content", "key appears twice"),
    ("unknown_ext.xml", None, None, None, "unknown file type '.xml'"),
]


def test_the_corpus_is_big_enough():
    assert len(BAD_CASES) >= 40
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES)
    on_disk = {p.name for p in BAD.iterdir()}
    assert {case[0] for case in BAD_CASES} <= on_disk
    assert on_disk <= {case[0] for case in BAD_CASES}, "every bad fixture has a table entry"


@pytest.mark.parametrize(("name", "kind", "line", "field", "needle"), BAD_CASES,
                         ids=[c[0] for c in BAD_CASES])
def test_bad_fixture_names_line_and_field(name, kind, line, field, needle):
    report = validate(BAD / name, kind=kind)
    assert not report.ok
    first = report.errors[0]
    assert (first.line, first.field) == (line, field), str(first)
    assert needle in first.message
    assert first.path == str(BAD / name)
    # the one-line form a person greps for
    where = f"{BAD / name}:{line}: " if line is not None else f"{BAD / name}: "
    assert str(first).startswith(where + (f"{field}: " if field else ""))


@pytest.mark.parametrize(("name", "fmt", "kind", "rows"), GOOD_CASES, ids=[c[0] for c in GOOD_CASES])
def test_good_fixture_is_accepted(name, fmt, kind, rows):
    report = validate(GOOD / name)
    assert report.ok, [str(p) for p in report.problems]
    assert report.problems == []
    assert (report.format, report.kind, report.rows) == (fmt, kind, rows)
    assert len(report.records) == len(report.line_numbers) == rows
    assert validate(GOOD / name, kind=kind).ok  # asking for the right kind changes nothing


def test_every_format_and_file_type_has_a_good_fixture():
    # the formats only public-shaped files use live in tests/fixtures/real_formats
    real = FIXTURES.parent / "real_formats"
    formats = {case[1] for case in GOOD_CASES} | {
        validate(real / name).format for name in
        ("kto_messages.json", "sharegpt_preference.json", "pairs_messages.jsonl")}
    assert formats == set(FORMATS)
    suffixes = {Path(case[0]).suffix for case in GOOD_CASES}
    assert {".jsonl", ".json", ".csv", ".tsv", ".txt"} <= suffixes
    assert {k for k in KINDS} == {case[2] for case in GOOD_CASES}


# ---------------------------------------------------------------- normalised records


def test_alpaca_becomes_messages_with_input_after_a_blank_line():
    records = validate(GOOD / "alpaca.json").records
    assert records[0] == {"messages": [
        {"role": "user", "content": "Translate to French.\n\ncat"},
        {"role": "assistant", "content": "chat"}]}
    assert records[1]["messages"][0]["content"] == "Say hello."  # empty input adds nothing
    assert records[2]["messages"][0]["content"] == "Add the numbers."  # null input too


def test_sharegpt_speakers_map_to_roles():
    rec = validate(GOOD / "sharegpt.jsonl").records[0]
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]


def test_text_parts_are_joined():
    rec = validate(GOOD / "messages.jsonl").records[2]
    assert rec["messages"][0] == {"role": "user", "content": "Parts work."}


def test_implicit_prompts_are_extracted():
    rec = validate(GOOD / "preference_implicit.jsonl").records[0]
    assert rec == {"prompt": [{"role": "user", "content": "2+2?"}],
                   "chosen": [{"role": "assistant", "content": "4"}],
                   "rejected": [{"role": "assistant", "content": "5"}]}
    strings = validate(GOOD / "preference.jsonl").records[1]
    assert strings == {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}


def test_prompt_repeated_in_chosen_is_stripped():
    rec = validate(GOOD / "preference_messages.json").records[1]
    assert rec["chosen"] == [{"role": "assistant", "content": "Yes."}]
    assert rec["rejected"] == [{"role": "assistant", "content": "No."}]


def test_csv_cells_keep_quoted_newlines_and_lines_follow_the_file():
    report = validate(GOOD / "prompt_completion.csv")
    assert report.records[0]["prompt"] == "Write a haiku\nabout rain"
    assert report.records[1]["prompt"] == 'Say "hi"'
    assert report.line_numbers == [2, 4, 5]


def test_kto_csv_labels_become_booleans():
    assert [r["label"] for r in validate(GOOD / "kto.csv").records] == [True, False, True]


def test_txt_is_one_document_per_paragraph():
    report = validate(GOOD / "corpus.txt")
    assert report.records[0] == {"text": "First paragraph, line one.\nLine two."}
    assert report.line_numbers == [1, 5, 7]


def test_json_array_lines_are_where_elements_start():
    assert validate(GOOD / "alpaca.json").line_numbers == [2, 7, 12]


# ---------------------------------------------------------------- collecting everything


def test_all_problems_are_collected_in_line_order(tmp_path):
    f = tmp_path / "many.jsonl"
    f.write_text("\n".join([
        '{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": 1}]}',
        "{oops",
        '{"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]}',
        '{"messages": []}',
    ]) + "\n")
    report = validate(f)
    got = [(p.line, p.field) for p in report.problems]
    assert got == [(1, "messages[1].role"), (1, "messages[1].content"), (2, None),
                   (4, "messages")]
    assert report.rows == 4 and len(report.records) == 1 and report.line_numbers == [3]


def test_problems_beyond_the_cap_are_counted_not_stored(tmp_path):
    f = tmp_path / "huge.jsonl"
    f.write_text('{"text": 1}\n' * (MAX_PROBLEMS + 500))
    report = validate(f)
    assert len(report.problems) == MAX_PROBLEMS
    assert report.more_problems == 500
    assert report.error_count == MAX_PROBLEMS + 500
    assert report.to_dict()["errors"] == MAX_PROBLEMS + 500


def test_a_huge_line_is_reported_without_echoing_it(tmp_path):
    f = tmp_path / "long.jsonl"
    big = "x" * 300_000
    f.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "' + big + '", }\n')
    report = validate(f)
    (problem,) = report.problems
    assert (problem.line, problem.field) == (2, None)
    assert "invalid JSON" in problem.message and len(str(problem)) < 300
    f.write_text(json.dumps({"text": big}) + "\n")
    assert validate(f).ok  # long is fine; only broken is not


def test_huge_wrong_value_is_quoted_short(tmp_path):
    f = tmp_path / "num.jsonl"
    f.write_text(json.dumps({"text": list(range(50_000))}) + "\n")
    (problem,) = validate(f).problems
    assert problem.field == "text" and len(problem.message) < 120


def test_trailing_user_turn_is_a_warning_not_an_error(tmp_path):
    f = tmp_path / "w.jsonl"
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    f.write_text(json.dumps({"messages": msgs}) + "\n")
    report = validate(f)
    assert report.ok and len(report.records) == 1
    (warning,) = report.warnings
    assert (warning.line, warning.field, warning.severity) == (1, "messages[2].role", "warning")


def test_unknown_kind_and_missing_path_are_problems_not_exceptions(tmp_path):
    report = validate(GOOD / "text.jsonl", kind="rlhf")
    assert not report.ok and "unknown kind 'rlhf'" in report.errors[0].message
    report = validate(tmp_path / "nope.jsonl")
    assert not report.ok and report.errors[0].message == "no such file or folder"


def test_a_folder_that_is_no_dataset(tmp_path):
    report = validate(tmp_path)
    assert "not a dataset saved with datasets' save_to_disk" in report.errors[0].message


def test_problem_str_and_dict():
    p = Problem("d.jsonl", 4, "messages[2].role", "unknown role")
    assert str(p) == "d.jsonl:4: messages[2].role: unknown role"
    assert str(Problem("d.jsonl", None, None, "file is empty")) == "d.jsonl: file is empty"
    assert str(Problem("d.parquet", 2, "text", "is empty", unit="row")) == \
        "d.parquet:row 2: text: is empty"
    assert Problem("d.jsonl", 4, None, "x").to_dict()["severity"] == "error"


# ---------------------------------------------------------------- columnar inputs


ROWS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
]


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("parquet")
    good, bad = folder / "good.parquet", folder / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[:1] * 3), good)
    pq.write_table(pa.Table.from_pylist(ROWS), bad)
    return good, bad


def test_parquet_good_and_bad(parquet_files):
    good, bad = parquet_files
    report = validate(good)
    assert report.ok and (report.file_type, report.format, report.rows) == ("parquet", "messages", 3)
    assert report.records[0] == ROWS[0]
    report = validate(bad)
    first = report.errors[0]
    assert (first.line, first.field, first.unit) == (2, "messages[1].role", "row")
    assert str(first).startswith(f"{bad}:row 2: messages[1].role: unknown role")


def test_datasets_folder(tmp_path):
    import datasets

    rows = [{"prompt": "p", "chosen": "good answer", "rejected": "bad answer"},
            {"prompt": "q", "chosen": "same", "rejected": "same"}]
    datasets.Dataset.from_list(rows[:1]).save_to_disk(str(tmp_path / "good"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "bad"))
    report = validate(tmp_path / "good")
    assert report.ok and (report.file_type, report.format, report.kind) == (
        "datasets", "preference", "preference")
    assert report.records == rows[:1]
    first = validate(tmp_path / "bad").errors[0]
    assert (first.line, first.field, first.unit) == (2, "chosen", "row")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(
        str(tmp_path / "dict"))
    report = validate(tmp_path / "dict")
    assert report.ok and "using 'train'" in report.warnings[0].message


# ---------------------------------------------------------------- hashing


def test_content_hash_of_files_and_folders(tmp_path):
    import hashlib

    f = tmp_path / "a.jsonl"
    f.write_bytes(b'{"text": "a"}\n')
    assert content_hash(f) == hashlib.sha256(b'{"text": "a"}\n').hexdigest()
    d = tmp_path / "ds"
    (d / "sub").mkdir(parents=True)
    (d / "x.arrow").write_bytes(b"1")
    (d / "sub" / "y.json").write_bytes(b"2")
    first = content_hash(d)
    assert first == content_hash(d)
    (d / "sub" / "y.json").write_bytes(b"3")
    assert content_hash(d) != first
    (d / "sub" / "y.json").write_bytes(b"2")
    (d / "sub" / "y.json").rename(d / "sub" / "z.json")  # same bytes, other name
    assert content_hash(d) != first
