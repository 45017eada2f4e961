"""Job configs: validation names the field, presets/overrides round-trip, help exists for every field."""

import pytest

from tuiapp.engine.train import config as c


@pytest.mark.parametrize("kind", list(c.CONFIG_CLASSES))
def test_every_kind_builds_round_trips_and_documents_every_field(kind):
    cls = c.config_class(kind)
    cfg = cls(dataset="demo/x")
    again = c.from_dict(kind, cfg.to_dict())
    assert again == cfg and again.to_dict()["kind"] == kind
    for f in c.field_help(cls):
        assert f["help"], f"{kind}.{f['name']} has no help text"
        if f["choices"]:
            assert f["default"] in f["choices"]


@pytest.mark.parametrize(
    "kind, values, field, fragment",
    [
        ("sft", {"method": "qlra"}, "method", "not one of"),
        ("sft", {"lerning_rate": 1e-4}, "lerning_rate", "did you mean learning_rate"),
        ("sft", {"learning_rate": 0}, "learning_rate", "(0, 1]"),
        ("sft", {"epochs": 0, "max_steps": -1}, "epochs", "max_steps"),
        ("sft", {"batch_size": "8"}, "batch_size", "expected int"),
        ("sft", {"eval_split": 0.7}, "eval_split", "[0, 0.5)"),
        ("sft", {"dataset": ""}, "dataset", "no dataset"),
        ("cpt", {"hidden_size": 100, "num_heads": 3}, "num_heads", "not divisible"),
        ("dpo", {"beta": 0}, "beta", "> 0"),
        ("dpo", {"loss_type": "nope"}, "loss_type", "not one of"),
        ("ppo", {"reward": "model.bin"}, "reward", "not a reward source"),
        ("ppo", {"mini_batch_size": 32, "rollout_batch_size": 16}, "mini_batch_size", "exceed"),
        ("grpo", {"num_generations": 1}, "num_generations", "at least 2"),
    ],
)
def test_bad_values_name_their_field(kind, values, field, fragment):
    values = {"dataset": "demo/x", **values}
    with pytest.raises(c.ConfigError) as err:
        c.from_dict(kind, values)
    assert err.value.field == field
    assert fragment in str(err.value)


def test_load_config_applies_typed_overrides(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('kind = "sft"\ndataset = "demo/sft"\nlora_r = 8\n')
    cfg = c.load_config(
        path,
        ["lora_r=32", "learning_rate=1e-3", "packing=false", "target_modules=q_proj,v_proj",
         "sample_prompts=Hi, there|Bye"],
    )
    assert cfg.lora_r == 32 and cfg.learning_rate == 1e-3 and cfg.packing is False
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.sample_prompts == ["Hi, there", "Bye"]


@pytest.mark.parametrize(
    "text, override, fragment",
    [
        ('dataset = "x"\n', [], "does not say its kind"),
        ('kind = "sft"\ndataset = \n', [], "not valid TOML"),
        ('kind = "sft"\ndataset = "x"\n', ["lora_r"], "expected key=value"),
        ('kind = "sft"\ndataset = "x"\n', ["packing=maybe"], "expected bool"),
        ('kind = "sft"\ndataset = "x"\n', ["lora_r=big"], "expected int"),
        ('kind = "sft"\ndataset = "x"\n', ["nope=1"], "not a sft setting"),
        ('kind = "party"\ndataset = "x"\n', [], "unknown job kind"),
    ],
)
def test_load_config_errors_are_for_people(tmp_path, text, override, fragment):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(c.ConfigError, match=fragment.replace("(", r"\(")):
        c.load_config(path, override)


def test_a_preset_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('kind = "cpt"\ndataset = "x"\n')
    with pytest.raises(c.ConfigError, match="is a cpt preset, not sft"):
        c.load_config(path, kind="sft")
