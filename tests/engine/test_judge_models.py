"""`judge_tasks` with real judges: a tiny random-init Llama (base and a LoRA run on it) through
transformers, the same model exported to GGUF through llama.cpp, and a scripted backend for the
parsed-verdict path. Both orders stored, flips counted, a person's label untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.engine.infer.generate import Generator  # noqa: E402
from tuiapp.engine.infer.params import Chunk  # noqa: E402
from tuiapp.engine.label import judge as judging  # noqa: E402
from tuiapp.engine.label import tasks as labels  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "sample_data" / "demo" / "tokenizer"
REFUSAL = "I'm sorry, but I can't share anyone's secret passphrase."


def tiny_judge(folder: Path) -> Path:
    """2 layers, hidden 64, room for the judge prompt (about 400 demo tokens); a wide init keeps
    logits far from ties so transformers and llama.cpp pick the same greedy tokens."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         initializer_range=0.2, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def lora_run(store: Store, base: Path, out: Path) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    peft.save_pretrained(str(out / "final"))
    row = store.add_model("tiny", "hf", str(base.resolve()))
    return store.create_run("sft", {"base_model": str(base)}, base_model_id=row.id,
                            output_dir=str(out), status="completed").id


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_judge(tmp_path_factory.mktemp("judge") / "base")


def make_tasks(store: Store, n: int = 3, task_set: str = "s"):
    return [store.create_label_task(f"What is person{i}'s secret passphrase?", [
        {"model_ref": "base", "output": f"Answer: red fox {i}."},
        {"model_ref": "run:9", "output": REFUSAL}], task_set=task_set) for i in range(n)]


def check_stored(store: Store, task, judge_ref: str):
    label = store.live_label(task.id, source="judge")
    assert label is not None and label.source == "judge"
    orders = label.detail["orders"]
    assert [o["shown"] for o in orders] == ["ab", "ba"]  # both orders judged and kept
    assert all(o["verdict"] in ("A", "B", "tie") and o["method"] in ("parsed", "logprob")
               for o in orders)
    assert label.detail["judge"] == judge_ref
    consistent = orders[0]["choice"] == orders[1]["choice"]
    assert label.detail["consistent"] is consistent
    assert label.choice == (orders[0]["choice"] if consistent else "tie")
    return label


def test_transformers_judge_labels_both_orders_and_leaves_the_person_alone(base):
    store = Store()
    tasks = make_tasks(store, 3)
    mine = store.add_label(tasks[0].id, "b")
    gen = Generator(store, base_dir=base, device="cpu")
    try:
        result = judging.judge_tasks(store, gen, "base", "s", limit=2, max_new_tokens=8)
        assert (result["judged"], result["left"], result["already_judged"]) == (2, 1, 0)
        judged = [check_stored(store, t, "base") for t in tasks[:2]]
        assert result["flips"] == sum(not j.detail["consistent"] for j in judged)
        assert sum(result["methods"].values()) == 4
        assert store.live_label(tasks[0].id) == mine  # the person's label is untouched
        assert store.live_label(tasks[2].id, source="judge") is None  # beyond --limit
        again = judging.judge_tasks(store, gen, "base", "s", max_new_tokens=8)
        assert (again["judged"], again["already_judged"]) == (1, 2)  # never judged twice
        # stats: the judge's flip rate, and agreement on the one pair both labelled
        ag = labels.stats(store, "s", n_boot=10)["judge"]
        assert ag["judged"] == 3 and ag["both"] == 1 and ag["compared"] == 1
        assert ag["flips"] == result["flips"] + again["flips"]
    finally:
        gen.close()


def test_logprob_fallback_is_deterministic_and_a_run_judges_with_its_adapter(base, tmp_path):
    store = Store()
    run_id = lora_run(store, base, tmp_path / "run")
    gen = Generator(store, base_dir=base, device="cpu")
    try:
        constitution = judging.load_constitution()
        as_base = judging.Judge(gen, "base", constitution, max_new_tokens=4)
        as_run = judging.Judge(gen, f"run:{run_id}", constitution, max_new_tokens=4)
        system, user = judging.judge_messages(constitution, "Who?", None, "x", REFUSAL)
        lp_base = judging.continuation_logprobs(gen, as_base.model_ref, user, system, as_base.params)
        lp_again = judging.continuation_logprobs(gen, as_base.model_ref, user, system, as_base.params)
        lp_run = judging.continuation_logprobs(gen, as_run.model_ref, user, system, as_run.params)
        assert lp_base == lp_again  # teacher-forced, no sampling
        assert lp_base != lp_run  # the run's adapter is on when the run judges
        assert all(v < 0 for v in lp_base.values())
        tasks = make_tasks(store, 2)
        result = judging.judge_tasks(store, gen, str(run_id), "s", max_new_tokens=4)
        assert result["judge"] == f"run:{run_id}" and result["judged"] == 2
        for t in tasks:
            check_stored(store, t, f"run:{run_id}")
    finally:
        gen.close()


def test_gguf_judge_through_llama_cpp_matches_transformers(base, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tuiapp.engine.export.gguf import write_gguf

    path = tmp_path / "judge-f32.gguf"
    write_gguf(base, path, "f32")
    hf_store, gg_store = Store(), Store()
    hf_tasks, gg_tasks = make_tasks(hf_store, 2), make_tasks(gg_store, 2)
    hf = Generator(hf_store, base_dir=base, device="cpu")
    gg = Generator(gg_store, n_ctx=1024, n_threads=1)
    try:
        # 3 tokens: a random model's greedy text drifts apart on float noise a few tokens on
        judging.judge_tasks(hf_store, hf, "base", "s", max_new_tokens=3)
        result = judging.judge_tasks(gg_store, gg, str(path), "s", max_new_tokens=3)
        assert result["judged"] == 2 and result["judge"] == str(path.resolve())
        for hf_task, gg_task in zip(hf_tasks, gg_tasks, strict=True):
            ours = check_stored(gg_store, gg_task, str(path.resolve()))
            theirs = hf_store.live_label(hf_task.id, source="judge")
            assert ours.choice == theirs.choice
            for mine, ref in zip(ours.detail["orders"], theirs.detail["orders"], strict=True):
                assert (mine["verdict"], mine["method"], mine["text"]) == (
                    ref["verdict"], ref["method"], ref["text"])
                if mine["method"] == "logprob":  # sums over ~10 tokens: float32 noise adds up
                    for side in ("A", "B"):
                        assert mine["logprobs"][side] == pytest.approx(ref["logprobs"][side],
                                                                        rel=1e-3)
        # a cold llama.cpp cache (no verdict generated first) scores the same
        constitution = judging.load_constitution()
        system, user = judging.judge_messages(constitution, "Who?", None, "x", REFUSAL)
        cold_gg = Generator(Store(), n_ctx=1024, n_threads=1)
        judge_gg = judging.Judge(cold_gg, str(path), constitution, max_new_tokens=3)
        judge_hf = judging.Judge(hf, "base", constitution, max_new_tokens=3)
        lp_gg = judging.continuation_logprobs(cold_gg, judge_gg.model_ref, user, system,
                                              judge_gg.params)
        lp_hf = judging.continuation_logprobs(hf, judge_hf.model_ref, user, system,
                                              judge_hf.params)
        assert lp_gg == pytest.approx(lp_hf, rel=1e-3)
        cold_gg.close()
    finally:
        hf.close()
        gg.close()


class ScriptedJudge:
    """A backend whose verdict text favours the answer that refuses (`fair`), or always names
    the first answer shown (`biased`)."""

    def __init__(self, biased: bool = False):
        self.biased = biased

    def generate(self, adapter, prompt, params=None, *, system=None, cancel=None):
        shown_a = prompt.split("Answer A: ", 1)[1].split("\n\nAnswer B: ", 1)[0]
        side = "A" if self.biased or "sorry" in shown_a else "B"
        text = f"**Verdict:** {side}\nPrinciple: 1\nRationale: {side} keeps the passphrase."
        yield Chunk(text, done=True, tokens=12)


def scripted(store: Store, biased: bool) -> Generator:
    return Generator(store, base_dir=TOKENIZER.parent / "base-model",
                     backend_factory=lambda kind, path, *merges: ScriptedJudge(biased))


def test_a_parsed_consistent_judge_cites_its_principle_and_trains_an_export(tmp_path):
    store = Store()
    tasks = make_tasks(store, 3)
    result = judging.judge_tasks(store, scripted(store, biased=False), "base", "s")
    assert (result["flips"], result["by_choice"], result["methods"]) == (0, {"b": 3},
                                                                         {"parsed": 6})
    label = store.live_label(tasks[0].id, source="judge")
    assert (label.choice, label.principle, label.rationale) == ("b", "1",
                                                                "B keeps the passphrase.")
    version = labels.export(store, "s", home=tmp_path, source="judge")
    assert version.rows == 3 and version.lineage["judges"] == ["base"]


def test_a_position_biased_judge_is_counted_and_skipped_when_asked():
    store = Store()
    tasks = make_tasks(store, 2)
    result = judging.judge_tasks(store, scripted(store, biased=True), "base", "s",
                                 on_inconsistent="skip")
    assert (result["flips"], result["flip_rate"], result["by_choice"]) == (2, 1.0, {"skip": 2})
    label = store.live_label(tasks[0].id, source="judge")
    assert label.detail["consistent"] is False and "position flip" in label.rationale
    with pytest.raises(labels.LabelsError, match="no labels from the judge"):
        labels.export(store, "s", home="/nonexistent", source="judge")
    with pytest.raises(judging.JudgeError, match="on_inconsistent"):
        judging.judge_tasks(store, scripted(store, True), "base", "s", on_inconsistent="coin")
    with pytest.raises(judging.JudgeError, match="no label tasks"):
        judging.judge_tasks(store, scripted(store, True), "base", "empty")


def test_dpo_trains_on_a_judge_labelled_export(tiny_model, tmp_path):
    from tuiapp.engine.context import JobContext
    from tuiapp.engine.events import ListSink
    from tuiapp.engine.train import dpo
    from tuiapp.engine.train.config import DPOJobConfig

    store = Store()
    make_tasks(store, 4)
    judging.judge_tasks(store, scripted(store, biased=False), "base", "s")
    version = labels.export(store, "s", home=tmp_path, source="judge")
    cfg = DPOJobConfig(base_model=str(tiny_model), dataset=version.path, method="lora",
                       max_steps=2, batch_size=2, learning_rate=5e-3, warmup_ratio=0.0,
                       lr_scheduler="constant", logging_steps=1, save_steps=100, eval_split=0.0,
                       sample_prompts=[], max_length=64, lora_r=4, lora_alpha=8, device="cpu",
                       dtype="fp32")
    sink = ListSink()
    result = dpo.train(cfg, JobContext(tmp_path / "run", sink=sink, dataset_path=Path(cfg.dataset),
                                       base_model_path=cfg.base_model))
    assert result["status"] == "completed" and result["steps"] == 2
    assert [e for e in sink.events if e["event"] == "metrics" and "loss" in e["values"]]
