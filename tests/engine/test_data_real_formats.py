"""Files shaped like the public ones practitioners bring (LLaMA-Factory's data/ demos, hh-rlhf,
the OpenAI cookbook's tool calls), written here by hand: each is read as the kind it means, with
the right counts, and the rows it cannot use are refused in words naming line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuiapp.engine.data import compute_stats, validate

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_formats"

# (file, format, kind, rows read, usable records)
REAL_GOOD = [
    ("sharegpt_preference.json", "sharegpt_preference", "preference", 3, 3),
    ("kto_messages.json", "kto_messages", "kto", 4, 4),
    ("openai_tools.jsonl", "messages", "sft", 3, 3),
    ("sharegpt_tools.json", "sharegpt", "sft", 2, 2),
    ("pairs_messages.jsonl", "preference_message_pairs", "preference", 2, 2),
    ("alpaca_preference.json", "preference", "preference", 2, 2),
    ("paragraphs.txt", "text", "text", 3, 3),
    ("long_lines.txt", "text", "text", 4, 4),
]


@pytest.mark.parametrize(("name", "fmt", "kind", "rows", "usable"), REAL_GOOD,
                         ids=[c[0] for c in REAL_GOOD])
def test_public_shapes_are_read_as_what_they_mean(name, fmt, kind, rows, usable):
    report = validate(REAL / name)
    assert report.ok, [str(p) for p in report.problems]
    assert report.warnings == []
    assert (report.format, report.kind, report.rows, len(report.records)) == (fmt, kind, rows,
                                                                              usable)
    assert validate(REAL / name, kind=kind).ok


def test_sharegpt_preference_becomes_prompt_and_single_replies():
    rec = validate(REAL / "sharegpt_preference.json").records[1]
    assert rec["prompt"] == [{"role": "system", "content": "Answer briefly."},
                             {"role": "user", "content": "What is the boiling point of water at "
                              "sea level?"}]
    assert rec["chosen"] == [{"role": "assistant", "content": "100 degrees Celsius."}]
    assert rec["rejected"] == [{"role": "assistant", "content": "About 50 degrees, give or take."}]
    report = validate(REAL / "sharegpt_preference.json", kind="preference")
    assert report.ok and report.format == "sharegpt_preference"


def test_messages_with_a_label_are_kto_and_keep_the_label():
    report = validate(REAL / "kto_messages.json")
    assert [r["label"] for r in report.records] == [True, False, True, False]
    first = report.records[0]
    assert first["prompt"] == [{"role": "user", "content": "Give me a synonym for happy."}]
    assert first["completion"] == [{"role": "assistant", "content": "Joyful."}]
    stats = compute_stats(report, tokenizer=None)
    assert stats["labels"] == {"desirable": 2, "undesirable": 2}


def test_asked_kind_wins_and_the_dropped_label_is_named():
    report = validate(REAL / "kto_messages.json", kind="sft")
    assert report.ok and report.format == "messages"
    assert [(w.field, w.line) for w in report.warnings] == [("label", 2)]
    assert "column not used for messages data (4 row(s))" in report.warnings[0].message
    wrong = validate(REAL / "sharegpt_preference.json", kind="kto")
    assert not wrong.ok and "missing key 'label'" in wrong.errors[0].message


def test_unused_columns_are_named_once_with_their_count():
    report = validate(REAL / "extra_columns.jsonl")
    assert report.ok
    assert sorted(w.field for w in report.warnings) == ["id", "source"]
    assert all("(2 row(s))" in w.message for w in report.warnings)
    # the system column is read: it becomes the first message
    assert report.records[0]["messages"][0] == {"role": "system", "content": "Be concise."}


def test_openai_tool_calls_normalise_to_the_transformers_chat_format():
    report = validate(REAL / "openai_tools.jsonl")
    msgs = report.records[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["content"] == ""
    assert msgs[2]["tool_calls"] == [{"type": "function", "id": "call_1", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert msgs[3] == {"role": "tool", "content": '{"temp_c": 18, "sky": "cloudy"}',
                       "tool_call_id": "call_1"}
    assert report.records[0]["tools"][0]["function"]["name"] == "get_weather"
    assert report.records[1]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Oslo", "unit": "F"}
    assert "tools" not in report.records[2]


def test_sharegpt_function_call_and_observation_turns():
    rec = validate(REAL / "sharegpt_tools.json").records[0]
    roles = [m["role"] for m in rec["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert rec["messages"][2]["tool_calls"][0]["function"] == {
        "name": "convert_currency", "arguments": {"amount": 100, "from": "USD", "to": "EUR"}}
    assert rec["tools"][0] == {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert money between currencies",
        "parameters": {"type": "object", "properties": {"amount": {"type": "number"},
                                                        "from": {"type": "string"},
                                                        "to": {"type": "string"}},
                       "required": ["amount", "from", "to"]}}}


def test_tool_use_stats_count_the_calls_and_results():
    stats = compute_stats(validate(REAL / "openai_tools.jsonl"), tokenizer=None)
    assert stats["rows"] == 3
    assert stats["roles"]["tool"]["messages"] == 2
    assert stats["assistant_tokens"]["min"] > 0


@pytest.mark.parametrize(("row", "field", "needle"), [
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null, '
     '"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}',
     "messages[1].tool_calls[0].arguments", "is not valid JSON"),
    ('{"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": '
     '"{\\"arguments\\": {}}"}, {"from": "observation", "value": "1"}, {"from": "gpt", '
     '"value": "y"}]}', "conversations[1].value[0].name", "missing the function's name"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}, '
     '{"role": "assistant", "content": "y"}]}', "messages[1].role",
     "must follow an assistant turn with tool_calls"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], '
     '"tools": "[{bad"}', "tools", "is not valid JSON"),
])
def test_broken_tool_use_names_the_field(tmp_path, row, field, needle):
    f = tmp_path / "t.jsonl"
    f.write_text(row + "\n")
    report = validate(f)
    assert not report.ok
    assert (report.errors[0].line, report.errors[0].field) == (1, field), str(report.errors[0])
    assert needle in report.errors[0].message


def test_hh_rlhf_pairs_split_at_the_last_assistant_turn():
    report = validate(REAL / "hh_rlhf.jsonl")
    assert report.rows == 4 and len(report.records) == 3
    for rec in report.records:
        assert rec["prompt"].endswith("\n\nAssistant:")
    bike = report.records[1]
    assert bike["chosen"].startswith(" I'm happy") and bike["rejected"].startswith(" I'm not")
    assert report.records[2]["prompt"].count("\n\nHuman:") == 2
    (err,) = report.errors
    assert (err.line, err.field) == (3, "chosen")
    assert "the chosen reply is empty" in err.message
    assert "common beginning" not in err.message


def test_a_reply_that_is_the_beginning_of_the_other_is_said_so(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"chosen": "Yes", "rejected": "Yes indeed"}\n')
    err = validate(f).errors[0]
    assert err.field == "chosen" and "exact beginning of the other" in err.message


def test_text_files_split_into_documents():
    paras = validate(REAL / "paragraphs.txt")
    assert paras.line_numbers == [1, 4, 8]
    assert paras.records[1]["text"].startswith("The second chapter")
    lines = validate(REAL / "long_lines.txt")
    assert lines.line_numbers == [1, 2, 3, 4]
    stats = compute_stats(lines, tokenizer=None)
    assert stats["documents"] == 4


def test_short_lines_without_blank_lines_stay_one_document(tmp_path):
    f = tmp_path / "poem.txt"
    f.write_text("roses are red\nviolets are blue\nsugar is sweet\n")
    assert len(validate(f).records) == 1


@pytest.mark.parametrize(("name", "line", "field", "needle"), [
    ("images.json", 2, "images", "multimodal rows are not supported: this row has an array in "
     "'images'"),
    ("content_image.jsonl", 1, "messages[0].content[1]",
     "a content part of type 'image_url' (multimodal) is not supported"),
])
def test_multimodal_rows_are_refused_naming_the_column(name, line, field, needle):
    report = validate(REAL / name)
    assert not report.ok and not report.records
    assert (report.errors[0].line, report.errors[0].field) == (line, field)
    assert needle in report.errors[0].message


def test_text_part_keyed_value_gets_a_message_that_says_so(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": [{"type": "text", "value": "hi"}]}, '
                 '{"role": "assistant", "content": "yo"}]}\n')
    err = validate(f).errors[0]
    assert err.field == "messages[0].content[0]" and "not 'value'" in err.message


@pytest.mark.parametrize(("text", "needle"), [
    ('{"text": "unterminated}\n', "Unterminated string starting at column 10; a string is not "
     "closed"),
    ('{"text": "a",}\n', "keys need double quotes, and there must be no trailing comma"),
    ('{"text": "a\\q"}\n', "Invalid \\escape; a backslash starts an escape"),
])
def test_json_errors_are_whole_sentences(tmp_path, text, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    err = validate(f).errors[0]
    assert err.line == 1 and needle in err.message
    assert not err.message.endswith(" at")


def test_a_field_error_in_a_json_array_names_the_fields_own_line():
    bad = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bad"
    err = validate(bad / "json_array_bad_element.json").errors[0]
    assert (err.line, err.field) == (26, "messages[0].role")  # the row, as before
    assert err.message.endswith("(the field is on line 29)")
    err = validate(bad / "alpaca_output_number.json").errors[0]
    assert err.message.endswith("(the field is on line 4)")
    # a missing key has no line of its own: nothing is added
    assert "the field is on line" not in validate(bad / "alpaca_missing_output.json").errors[0].message


def _tokenizer_with(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    tok.chat_template = template
    return tok


TOOL_TEMPLATE = (
    "{% if tools %}{% for t in tools %}tool {{ t.function.name }}\n{% endfor %}{% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}"
    "{% for c in m.tool_calls or [] %} call {{ c.function.name }} {{ c.function.arguments | tojson }}"
    "{% endfor %}\n{% endfor %}")
PLAIN_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def test_stats_say_whether_the_template_renders_tool_calls():
    report = validate(REAL / "openai_tools.jsonl")
    good = compute_stats(report, tokenizer=_tokenizer_with(TOOL_TEMPLATE))["tool_use"]
    assert good == {"rows_with_tool_calls": 2, "rows_with_tools": 2,
                    "template_renders_tool_calls": True, "template_renders_tools": True}
    plain = compute_stats(report, tokenizer=_tokenizer_with(PLAIN_TEMPLATE))["tool_use"]
    assert plain["template_renders_tool_calls"] is False
    assert plain["template_renders_tools"] is False
    assert "tool_use" not in compute_stats(validate(REAL / "kto_messages.json"),
                                           tokenizer=_tokenizer_with(PLAIN_TEMPLATE))


def test_cli_stats_warns_when_the_template_drops_tool_calls(tmp_path):
    from typer.testing import CliRunner

    from tuiapp.cli import data_cmd

    folder = tmp_path / "tok"
    _tokenizer_with(PLAIN_TEMPLATE).save_pretrained(folder)
    result = CliRunner().invoke(data_cmd.app, ["stats", str(REAL / "openai_tools.jsonl"),
                                               "--tokenizer", str(folder)],
                                obj={"home": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert "2 row(s) hold tool calls but the chat template" in result.output
    assert "does not render tools=" in result.output
