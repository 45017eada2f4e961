"""tuneloop merge: adapter merges by PEFT, whole-model merges by merge_math, refusals, lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp.engine.export.merge_models import (  # noqa: E402
    MergeError,
    load_full_state,
    plan_merge,
    run_merge,
)
from tuiapp.engine.infer.model_refs import resolve_ref  # noqa: E402

WEIGHTS = [0.7, 0.3]


def _adapter(base_dir: Path, out: Path, seed: int, r: int = 4, targets="all-linear") -> Path:
    """A LoRA adapter with random A and B (B is zero at init, so set it: the delta is not 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets,
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("merge")
    store = Store(root / "tuneloop.db")
    base_row = store.add_model("tiny", "hf", str(tiny_model.resolve()))
    ids = {}
    for key, seed, r, targets in (("a", 1, 4, "all-linear"), ("b", 2, 4, "all-linear"),
                                  ("r8", 3, 8, "all-linear"), ("qv", 4, 4, ["q_proj", "v_proj"])):
        folder = _adapter(tiny_model, root / f"adapter-{key}", seed, r, targets)
        ids[key] = store.add_model(f"adapter {key}", "adapter", str(folder), base_model_id=base_row.id).id
    return {"root": root, "store": store, "base": tiny_model.resolve(), "ids": ids}


def _refs(world, *keys) -> list[str]:
    return [f"model:{world['ids'][k]}" for k in keys]


def _merge(world, keys, method, **kw):
    plan = plan_merge(_refs(world, *keys), method, kw.pop("weights", WEIGHTS), kw.pop("density", None),
                      world["store"], full=kw.pop("full", False))
    return run_merge(plan, world["store"], world["root"] / "models", **kw)


def _expected_sum(world, keys, weights):
    base = load_full_state(resolve_ref(str(world["base"])))
    inputs = [load_full_state(resolve_ref(r, world["store"])) for r in _refs(world, *keys)]
    return base, {k: base[k] + sum(w * (s[k] - base[k]) for s, w in zip(inputs, weights, strict=True))
                  for k in base if base[k].is_floating_point()}


def test_cat_adapter_merge_is_the_weighted_sum_of_the_deltas(world):
    result = _merge(world, ["a", "b"], "cat")
    assert result["kind"] == "adapter" and result["library"] == "peft add_weighted_adapter"
    merged = load_full_state(resolve_ref(result["ref"], world["store"]))
    base, expected = _expected_sum(world, ["a", "b"], WEIGHTS)
    changed = 0
    for key, want in expected.items():
        assert torch.allclose(merged[key], want, atol=1e-5), key
        changed += int(not torch.allclose(want, base[key]))
    assert changed >= 14  # every linear of both layers moved (7 per layer)
    cfg = json.loads((Path(result["path"]) / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["base_model_name_or_path"] == str(world["base"])


def test_linear_adapter_merge_follows_peft_sqrt_weighting(world):
    """PEFT's linear combines A and B separately (sqrt(w * scaling) on each), so its delta has
    cross terms; check one layer against that formula, and that it differs from the exact sum."""
    from safetensors.torch import load_file

    result = _merge(world, ["a", "b"], "linear")
    merged = load_file(str(Path(result["path"]) / "adapter_model.safetensors"))
    key = next(k for k in merged if "layers.0.self_attn.q_proj.lora_A" in k)
    ins = [load_file(str(resolve_ref(r, world["store"]).adapter_dir / "adapter_model.safetensors"))
           for r in _refs(world, "a", "b")]
    scaling = 2.0  # lora_alpha / r
    want_a = sum((w * scaling) ** 0.5 * s[key] for s, w in zip(ins, WEIGHTS, strict=True))
    assert torch.allclose(merged[key], want_a, atol=1e-6)


def test_full_task_arithmetic_on_adapters_is_the_exact_weighted_sum(world):
    result = _merge(world, ["a", "b"], "task_arithmetic", weights=[1.0, -0.5])
    assert result["kind"] == "hf" and result["mode"] == "model"
    merged = load_full_state(resolve_ref(result["ref"], world["store"]))
    _, expected = _expected_sum(world, ["a", "b"], [1.0, -0.5])
    for key, want in expected.items():
        assert torch.allclose(merged[key], want, atol=1e-5), key


@pytest.mark.parametrize("method,full", [("ties", False), ("dare_ties", False), ("magnitude_prune", False),
                                         ("ties", True), ("dare_linear", True), ("slerp", True)])
def test_ties_dare_slerp_give_a_model_that_generates(world, method, full):
    from tuiapp.engine.infer.generate import GenerationParams, Generator

    result = _merge(world, ["a", "b"], method, density=0.5 if method != "slerp" else None, full=full,
                    weights=[0.5, 0.5] if method == "slerp" else WEIGHTS)
    row = world["store"].get_model(result["model_id"])
    lineage = row.meta["merge"]
    assert lineage["method"] == method and [i["weight"] for i in lineage["inputs"]] == (
        [0.5, 0.5] if method == "slerp" else WEIGHTS)
    assert [i["model_id"] for i in lineage["inputs"]] == [world["ids"]["a"], world["ids"]["b"]]
    assert row.base_model_id == world["store"].find_model(str(world["base"])).id
    gen = Generator(world["store"], world["root"], device="cpu")
    try:
        final = gen.complete(result["ref"], "Hello", GenerationParams(max_new_tokens=4))
    finally:
        gen.close()
    assert final.tokens > 0
    merged = load_full_state(resolve_ref(result["ref"], world["store"]))
    base = load_full_state(resolve_ref(str(world["base"])))
    assert all(torch.isfinite(v).all() for v in merged.values() if v.is_floating_point())
    assert any(not torch.allclose(merged[k], base[k]) for k in base if "q_proj" in k)


def test_dare_is_reproducible_by_seed_and_drops_by_density(world):
    one = _merge(world, ["a", "b"], "dare_linear", density=0.3, full=True, seed=5)
    two = _merge(world, ["a", "b"], "dare_linear", density=0.3, full=True, seed=5)
    s1 = load_full_state(resolve_ref(one["ref"], world["store"]))
    s2 = load_full_state(resolve_ref(two["ref"], world["store"]))
    base = load_full_state(resolve_ref(str(world["base"])))
    key = next(k for k in base if "layers.0.mlp.up_proj" in k)
    assert torch.equal(s1[key], s2[key])
    # each input keeps ~30% of its delta: most elements of the merge are touched by at most one input
    moved = (s1[key] != base[key]).float().mean().item()
    assert 0.35 < moved < 0.65  # 1 - 0.7 * 0.7 = 0.51 expected


def test_refusals_are_in_words(world, tmp_path):
    store = world["store"]
    with pytest.raises(MergeError, match="same rank"):
        plan_merge(_refs(world, "a", "r8"), "ties", None, 0.5, store)
    plan_merge(_refs(world, "a", "r8"), "cat", None, None, store)  # cat takes different ranks
    with pytest.raises(MergeError, match="same modules"):
        plan_merge(_refs(world, "a", "qv"), "linear", None, None, store)
    with pytest.raises(MergeError, match="one weight per input"):
        plan_merge(_refs(world, "a", "b"), "ties", "1,2,3", None, store)
    with pytest.raises(MergeError, match="exactly two"):
        plan_merge(_refs(world, "a", "b", "r8"), "slerp", None, None, store)
    with pytest.raises(MergeError, match="unknown merge method"):
        plan_merge(_refs(world, "a", "b"), "average", None, None, store)
    with pytest.raises(MergeError, match=r"in \(0, 1\]"):
        plan_merge(_refs(world, "a", "b"), "ties", None, 1.5, store)
    with pytest.raises(MergeError, match="whole model"):
        plan_merge([str(world["base"]), _refs(world, "a")[0]], "cat", None, None, store)
    # an adapter on another base (same shape, different weights folder)
    import shutil

    other_base = tmp_path / "other-base"
    shutil.copytree(world["base"], other_base)
    other = _adapter(other_base, tmp_path / "other-adapter", 9)
    with pytest.raises(MergeError, match="different bases"):
        plan_merge([_refs(world, "a")[0], str(other)], "ties", None, 0.5, store)
    with pytest.raises(MergeError, match="give --base"):
        plan_merge([str(world["base"]), str(other_base)], "ties", None, 0.5, None)


def test_the_cli_merges_and_prints_the_ref(world, tmp_path):
    from typer.testing import CliRunner

    from tuiapp.__main__ import app

    home = tmp_path / "home"
    runner = CliRunner()
    refs = ",".join(str(resolve_ref(r, world["store"]).adapter_dir) for r in _refs(world, "a", "b"))
    out = runner.invoke(app, ["--home", str(home), "merge", refs, "--method", "ties", "--weights", "1,1",
                              "--density", "0.4", "--name", "skills", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["ref"].startswith("model:") and Path(result["path"]).name == "skills"
    assert result["density"] == 0.4
    bad = runner.invoke(app, ["--home", str(home), "merge", refs, "--method", "nope"])
    assert bad.exit_code == 1 and "unknown merge method" in bad.output


def test_a_merged_model_exports_to_gguf_with_parity(world, tmp_path):
    pytest.importorskip("llama_cpp")
    from tuiapp.engine.export.job import run_export

    result = _merge(world, ["a", "b"], "ties", density=0.5, full=True, name="to-export")
    exported = run_export(result["path"], world["store"], world["root"], quants="f16",
                          out=tmp_path / "gguf", max_new_tokens=4)
    assert [f["status"] for f in exported["files"]] == ["ok"]
    assert exported["files"][0]["parity"]["ok"]


def test_a_merged_folder_is_a_dpo_start(world):
    from types import SimpleNamespace

    from tuiapp.engine.train.policy import resolve_start

    adapter = _merge(world, ["a", "b"], "cat")
    start = resolve_start(SimpleNamespace(start_from=adapter["path"]), world["store"], str(world["base"]))
    assert start.adapter_dir == adapter["path"] and start.base_path == str(world["base"])
    full = _merge(world, ["a", "b"], "ties", density=0.5, full=True)
    start = resolve_start(SimpleNamespace(start_from=full["path"]), world["store"], str(world["base"]))
    assert start.full_dir == full["path"]
