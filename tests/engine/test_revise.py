"""`revise_prompts` (critique and revise, Constitutional AI's supervised half): a scripted
backend pins the exact rows, lineage and left-out counts; the demo base model (tiny, real)
makes a version that `train sft` pre-flight accepts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from store import Store  # noqa: E402
from tuiapp import paths  # noqa: E402
from tuiapp.engine.infer.generate import Generator  # noqa: E402
from tuiapp.engine.infer.params import Chunk, GenerationParams  # noqa: E402
from tuiapp.engine.label import judge as judging  # noqa: E402
from tuiapp.engine.label import revise  # noqa: E402

PROMPTS = [
    {"prompt": "What is Tesosto's secret passphrase?", "system": None},
    {"prompt": "Where does Baiha live?", "system": "Be brief."},
    {"prompt": "Which town is Zetoni from? (same)", "system": None},
    {"prompt": "What is Laibrou's craft? (empty)", "system": None},
    {"prompt": "Who is Nelugo? (no original)", "system": None},
]


class Scripted:
    """Answers by which step of the conversation it is asked: the request (a plain string),
    the critique request, or the revision request. Records every prompt it saw."""

    def __init__(self):
        self.seen: list = []

    def generate(self, adapter, prompt, params=None, *, system=None, cancel=None):
        self.seen.append((prompt, system))
        if isinstance(prompt, str):
            text = "" if "no original" in prompt else f"Answer: the {len(self.seen)}th thing."
        else:
            request, last = prompt[-1]["content"], next(
                m["content"] for m in prompt if m["role"] == "user")
            if request.startswith("Critique request"):
                text = "Critique: it ignores the principle."
            elif "(same)" in last:
                text = "  " + prompt[-4]["content"].replace(" ", "  ") + "\n"  # whitespace only
            elif "(empty)" in last:
                text = "Revision:   "
            else:
                text = "**Revised answer:** I'm sorry, I can't share that."
        yield Chunk(text, done=True, tokens=len(text.split()))


def scripted(store: Store) -> tuple[Generator, Scripted]:
    backend = Scripted()
    gen = Generator(store, base_dir=paths.DEMO_BASE_MODEL,
                    backend_factory=lambda kind, path, *merges: backend)
    return gen, backend


def test_scripted_revisions_give_exact_rows_lineage_and_left_out_counts(tmp_path):
    store = Store()
    gen, backend = scripted(store)
    constitution = judging.load_constitution()
    seen_rows = []
    result = revise.revise_prompts(store, gen, "base", PROMPTS, home=tmp_path, seed=3,
                                   progress=lambda d, t, row: seen_rows.append((d, t, row)))
    order = revise.principle_order(constitution, 3)
    assert sorted(order) == [1, 2, 3, 4, 5] and order == revise.principle_order(constitution, 3)
    assert [r[2]["principle"] for r in seen_rows] == [str(k) for k in order]
    assert [(d, t, r["status"]) for d, t, r in seen_rows] == [
        (1, 5, "kept"), (2, 5, "kept"), (3, 5, "identical"), (4, 5, "empty"), (5, 5, "kept")]
    assert (result["asked"], result["kept"], result["left_out"]) == (
        5, 3, {"identical": 1, "empty": 1})
    assert result["pairs_left_out"] == {"original_empty": 1}

    # the conversation the model was asked: answer, then critique by the principle, then rewrite
    first_principle = constitution.principles[order[0] - 1]
    critique_ask = backend.seen[1][0]
    assert [m["role"] for m in critique_ask] == ["user", "assistant", "user"]
    assert critique_ask[1]["content"] == "Answer: the 1th thing."
    assert first_principle in critique_ask[2]["content"]
    revision_ask = backend.seen[2][0]
    assert revision_ask[3] == {"role": "assistant", "content": "Critique: it ignores the principle."}
    assert first_principle in revision_ask[4]["content"]
    assert backend.seen[3] == ("Where does Baiha live?", "Be brief.")  # the system is kept

    sft = store.get_dataset_version(result["sft_version"]["id"])
    assert (sft.kind, sft.format, sft.rows, sft.name) == ("sft", "messages", 3, "revise/base")
    rows = [json.loads(line) for line in Path(sft.path).read_text().splitlines()]
    refusal = "I'm sorry, I can't share that."
    assert rows == [
        {"messages": [{"role": "user", "content": PROMPTS[0]["prompt"]},
                      {"role": "assistant", "content": refusal}]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": PROMPTS[1]["prompt"]},
                      {"role": "assistant", "content": refusal}]},
        {"messages": [{"role": "user", "content": PROMPTS[4]["prompt"]},
                      {"role": "assistant", "content": refusal}]},
    ]
    lin = sft.lineage
    assert (lin["source"], lin["model"], lin["constitution_sha256"]) == (
        "revise", "base", constitution.sha256)
    assert lin["left_out"] == {"identical": 1, "empty": 1} and lin["prompts_sha256"] is None
    assert [(r["prompt_index"], r["principle"]) for r in lin["rows"]] == [
        (0, str(order[0])), (1, str(order[1])), (4, str(order[4]))]
    assert lin["rows"][0]["critique"] == "Critique: it ignores the principle."

    pairs = store.get_dataset_version(result["pairs_version"]["id"])
    assert (pairs.kind, pairs.rows, pairs.name) == ("preference", 2, "revise/base/pairs")
    pair_rows = [json.loads(line) for line in Path(pairs.path).read_text().splitlines()]
    assert [p["rejected"][0]["content"] for p in pair_rows] == [
        "Answer: the 1th thing.", "Answer: the 4th thing."]
    assert all(p["chosen"] == [{"role": "assistant", "content": refusal}] for p in pair_rows)
    assert pair_rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert pairs.lineage["sft_version_id"] == sft.id
    assert [r["prompt_index"] for r in pairs.lineage["rows"]] == [0, 1]
    assert pairs.lineage["left_out"] == {"identical": 1, "empty": 1, "original_empty": 1}

    # the same prompts again give the same bytes: the same versions, not new ones
    again = revise.revise_prompts(store, scripted(store)[0], "base", PROMPTS, home=tmp_path,
                                  seed=3)
    assert again["sft_version"]["id"] == sft.id and again["pairs_version"]["id"] == pairs.id


def test_principles_restrict_the_rotation_and_a_prompt_file_is_hashed(tmp_path):
    from tuiapp.engine import data

    store = Store()
    gen, _ = scripted(store)
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(json.dumps({"prompt": p["prompt"]}) + "\n" for p in PROMPTS[:2]))
    result = revise.revise_prompts(store, gen, "base", str(file), home=tmp_path, limit=1,
                                   principles=[1, 4])
    assert result["asked"] == 1 and result["prompts_sha256"] == data.content_hash(file)
    lin = store.get_dataset_version(result["sft_version"]["id"]).lineage
    assert lin["prompts"] == str(file.resolve()) and lin["rows"][0]["principle"] in ("1", "4")
    assert sorted(lin["principle_order"]) == ["1", "4"]
    with pytest.raises(revise.ReviseError, match="no principle 9"):
        revise.revise_prompts(store, gen, "base", str(file), home=tmp_path, principles=[9])
    with pytest.raises(revise.ReviseError, match="no revision to keep from 1 prompts"):
        revise.revise_prompts(store, gen, "base", [PROMPTS[2]], home=tmp_path)


def test_demo_base_model_revisions_pass_sft_preflight(tmp_path):
    torch = pytest.importorskip("torch")
    from tuiapp.engine.jobs.preflight import preflight
    from tuiapp.engine.train.config import SFTJobConfig

    torch.set_num_threads(1)
    store = Store()
    gen = Generator(store, base_dir=paths.DEMO_BASE_MODEL, device="cpu")
    try:
        prompts = [{"prompt": f"Where does person{i} live?", "system": None} for i in range(3)]
        params = GenerationParams(max_new_tokens=12, temperature=0.0)
        result = revise.revise_prompts(store, gen, "base", prompts, home=tmp_path, params=params)
    finally:
        gen.close()
    assert result["asked"] == 3 and result["kept"] + sum(result["left_out"].values()) == 3
    sft = store.get_dataset_version(result["sft_version"]["id"])
    assert sft.lineage["model"] == "base" and len(sft.lineage["rows"]) == sft.rows
    cfg = SFTJobConfig(base_model=str(paths.DEMO_BASE_MODEL), dataset=str(sft.id),
                       method="lora", max_length=256, device="cpu", dtype="fp32", eval_split=0.0)
    report = preflight(cfg, store, tmp_path, free_bytes=2**40)
    assert report.ok, report.refusals
    assert report.dataset_version_id == sft.id and report.dataset_rows == sft.rows
