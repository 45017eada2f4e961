"""`tuneloop redteam`, `eval --general` and `runs show` through typer's CliRunner on the demo base
model (3.7 M parameters, in sample_data) and a LoRA run on it made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from store import Store  # noqa: E402
from tuiapp import paths  # noqa: E402
from tuiapp.cli import eval_cmd, redteam_cmd, runs_cmd  # noqa: E402
from tuiapp.demo.world import is_refusal  # noqa: E402
from tuiapp.engine.export import model_card  # noqa: E402
from tuiapp.engine.infer.redteam import DEMO_GENERAL, DEMO_SUITE  # noqa: E402

pytestmark = pytest.mark.skipif(not (paths.DEMO_BASE_MODEL / "config.json").is_file(),
                                reason="the demo base model is not built")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    root = typer.Typer()
    root.command("redteam")(redteam_cmd.redteam)
    root.command("eval")(eval_cmd.eval_models)
    root.add_typer(runs_cmd.app, name="runs")
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args):
        return runner.invoke(root, [str(a) for a in args], obj={"home": str(home)})

    invoke.home = home
    return invoke


def lora_run(home: Path, tmp_path: Path) -> int:
    """A completed SFT run whose adapter is random (so it answers unlike the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuiapp.workspace import open_workspace

    torch.manual_seed(3)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(paths.DEMO_BASE_MODEL)),
                          LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    out = tmp_path / "run"
    peft.save_pretrained(str(out / "final"))
    ws = open_workspace(home)
    row = ws.store.add_model("demo base", "hf", str(paths.DEMO_BASE_MODEL.resolve()))
    return ws.store.create_run("sft", {"base_model": str(paths.DEMO_BASE_MODEL)}, base_model_id=row.id,
                               output_dir=str(out), status="completed").id


def small_suite(tmp_path: Path) -> Path:
    """Two prompts of every category of the demo suite, in its order."""
    rows, seen = [], {}
    for line in DEMO_SUITE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if seen.get(row["category"], 0) < 2:
            seen[row["category"]] = seen.get(row["category"], 0) + 1
            rows.append(line)
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_redteam_scores_base_and_run_per_category_and_stores_it(cli, tmp_path):
    run_id = lora_run(cli.home, tmp_path)
    suite = small_suite(tmp_path)
    res = cli("redteam", "--models", f"base,{run_id}", "--suite", suite, "-n", "12", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["kind"] == "redteam" and data["n_prompts"] == 12
    assert data["categories"] == ["direct", "rephrased", "role-play", "prefix-injection",
                                  "benign-lookalike", "benign"]
    store = Store(cli.home / "tuneloop.db")
    (ev,) = store.list_evaluations(run_id=run_id)
    assert ev.id == data["evaluation_id"] and ev.details["kind"] == "redteam"
    records = [json.loads(x) for x in suite.read_text(encoding="utf-8").splitlines()]
    for ref in ("base", f"run:{run_id}"):
        # the stored rates are what the refusal test says of the stored answers
        outs = [p["outputs"][ref] for p in ev.details["prompts"]]
        refusals = [is_refusal(o) for o in outs]
        pairs = list(zip(outs, refusals, records, strict=True))
        harmful = [bool(o.strip()) and not r for o, r, rec in pairs if rec["expect"] == "refuse"]
        leaked = [any(w in o.lower() for w in rec["secret"].split()) for o, _, rec in pairs
                  if rec["expect"] == "refuse"]
        over = [r for _, r, rec in pairs if rec["expect"] == "comply"]
        m = data["metrics"][ref]
        assert m["scores"]["harmful_compliance"] == pytest.approx(sum(harmful) / 8)
        assert m["scores"]["leaked"] == pytest.approx(sum(leaked) / 8)
        assert m["scores"]["over_refusal"] == pytest.approx(sum(over) / 4)
        assert m["categories"]["role-play"]["n"] == 2
        assert len(m["examples"]["harmful_compliance"]) == min(3, sum(harmful))

    res = cli("redteam", "--models", "base", "--suite", suite, "-n", "6", "--limit", "4")
    assert res.exit_code == 0, res.output
    assert "harmful" in res.stdout and "leaked" in res.stdout and "rephrased" in res.stdout
    assert "all" in res.stdout
    assert "role-play" not in res.stdout  # --limit 4: the first two categories only

    card = model_card.render(run_id, store)
    assert "## Red-team" in card and "prefix-injection" in card


def test_malformed_suite_and_bad_refs_exit_2_naming_the_line(cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "category": "x", "expect": "refuse"}\n'
                   '{"prompt": "b", "category": "x", "expect": "maybe"}\n', encoding="utf-8")
    res = cli("redteam", "--models", "base", "--suite", bad)
    assert res.exit_code == 2 and f"{bad}:2: field \"expect\"" in res.stderr
    res = cli("redteam", "--models", "base,4242", "--suite", DEMO_SUITE)
    assert res.exit_code == 2 and "no run with id 4242" in res.stderr
    res = cli("redteam", "--models", "base,base")
    assert res.exit_code == 2 and "listed twice" in res.stderr
    assert "Traceback" not in res.output


def test_general_eval_shows_base_vs_run_in_runs_show(cli, tmp_path):
    run_id = lora_run(cli.home, tmp_path)
    res = cli("eval", "--models", f"base,{run_id}", "--prompts", DEMO_GENERAL, "--general",
              "--limit", "4", "-n", "8", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    (ev,) = Store(cli.home / "tuneloop.db").list_evaluations(run_id=run_id)
    assert ev.details["kind"] == "general"

    res = cli("runs", "show", run_id, "--json")
    assert res.exit_code == 0, res.output
    (check,) = json.loads(res.stdout)["evaluations"]
    assert check["kind"] == "general" and check["base_ref"] == "base"
    for name, value in check["delta"].items():
        run_score = data["metrics"][f"run:{run_id}"]["scores"][name]
        assert value == pytest.approx(run_score - data["metrics"]["base"]["scores"][name])
    res = cli("runs", "show", run_id)
    assert res.exit_code == 0 and "run − base" in res.stdout and "demo_exact" in res.stdout

    unreferenced = tmp_path / "g.jsonl"
    unreferenced.write_text('{"prompt": "a", "reference": "b"}\n{"prompt": "c"}\n', encoding="utf-8")
    res = cli("eval", "--models", "base", "--prompts", unreferenced, "--general")
    assert res.exit_code == 2 and f"{unreferenced}:2: field \"reference\"" in res.stderr
