"""The Merge screen: inputs, method and weights in; the merge runs in a worker, the new model row
is listed with its inputs, and a refusal is shown in words."""

from __future__ import annotations

import pytest

from tuiapp.screens.merge import MergeScreen, open_merge

from .conftest import text_of, wait_until

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


def _two_adapters(folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuiapp import paths

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(paths.DEMO_TOKENIZER)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                      tie_word_embeddings=True)
    base = folder / "base"
    LlamaForCausalLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                               LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        with torch.no_grad():
            for _, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.1)
        model.save_pretrained(folder / f"adapter-{seed}")
        out.append(str(folder / f"adapter-{seed}"))
    return out


@pytest.mark.anyio
async def test_merge_screen_merges_lists_and_refuses_in_words(make_app, store, tmp_path):
    refs = ",".join(_two_adapters(tmp_path))
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        open_merge(app, refs)
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen))
        screen = app.screen
        screen.query_one("#merge-method").value = "cat"
        screen.query_one("#merge-weights").value = "0.5,0.5"
        await pilot.click("#merge-go")
        await wait_until(pilot, lambda: screen.last is not None or "refused" in
                         text_of(screen.query_one("#merge-status")), timeout=60)
        assert screen.last is not None, text_of(screen.query_one("#merge-status"))
        await wait_until(pilot, lambda: screen.query_one("#merge-rows").row_count == 1)
        row = store.get_model(screen.last["model_id"])
        assert row.kind == "adapter" and row.meta["merge"]["method"] == "cat"
        assert [i["weight"] for i in row.meta["merge"]["inputs"]] == [0.5, 0.5]
        assert screen._picked_refs()[-1] == f"model:{row.id}"

        screen.query_one("#merge-method").value = "slerp"
        screen.query_one("#merge-refs").value = refs + "," + refs.split(",")[0]
        screen.last = None
        screen.action_merge()
        await wait_until(pilot, lambda: "refused" in text_of(screen.query_one("#merge-status")), timeout=30)
        assert "exactly two" in text_of(screen.query_one("#merge-status"))


@pytest.mark.anyio
async def test_the_palette_opens_the_merge_view(make_app):
    from tuiapp.screens.palette import TuneloopCommands

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        hits = [hit async for hit in TuneloopCommands(app.screen).search("merge: combine")]
        assert hits, "no palette entry for the Merge view"
        app.call_later(hits[0].command)
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen))
