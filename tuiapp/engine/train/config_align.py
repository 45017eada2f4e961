"""Job configurations of the alignment family: DPO (and its loss variants), KTO, reward model,
PPO, GRPO and RLOO. Same conventions as config_base.py (whose helpers they use)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from tuiapp.engine.train.config_base import (
    ALIGN_METHODS,
    CHAT_TEMPLATES,
    CommonTrainConfig,
    ConfigError,
    check_method_fields,
    ia3_feedforward_opt,
    ia3_targets_opt,
    opt,
    virtual_tokens_opt,
)

# DPO and KTO train any method whose reference works (config_base.ALIGN_METHODS): the PEFT ones
# against the start model with the new adapter disabled, full and bitfit against a frozen copy.
PREFERENCE_METHOD_HELP = (
    "lora: a new adapter on the start model; dora: LoRA with weight decomposition; ia3: learned "
    "scaling vectors; prefix / prompt: prefix or prompt tuning (the reference is the start model "
    "with the adapter disabled); full: every weight; bitfit: bias terms only (full and bitfit "
    "keep a frozen reference copy or precomputed reference log-probs)."
)

# --- alignment -------------------------------------------------------------------------------

DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "apo_zero", "simpo", "orpo")
REWARD_SOURCE_HELP = (
    "Reward: 'verifier:demo' (the demo world's checker: right answer / refusal of forbidden "
    "requests), 'run:ID' (a reward-model run), or 'python:module:function' taking "
    "(prompt, response) and returning a float."
)


@dataclass
class AlignCommonConfig(CommonTrainConfig):
    """Fields the preference and RL jobs share: where the policy starts and how it is adapted."""

    start_from: str = opt(
        "",
        "SFT run to start from (a run id). Its adapter is merged into the base in memory and a "
        "new LoRA adapter is trained on top; the reference is that model with the new adapter "
        "disabled, so no second copy is kept. Empty: start from base_model.",
        group="job",
    )
    method: str = opt(
        "lora", "lora: a new adapter on the start model; full: every weight (keeps a frozen reference copy).",
        ("lora", "full"), group="method",
    )
    lora_r: int = opt(16, "LoRA rank.", group="method")
    lora_alpha: int = opt(32, "LoRA alpha.", group="method")
    lora_dropout: float = opt(0.0, "LoRA dropout (0 keeps policy and reference log-probs comparable).", group="method")
    target_modules: list[str] = opt(["all-linear"], "Modules that get adapters.", group="method")
    chat_template: str = opt("model", "Chat template: the model's own, ChatML, or Llama 3.", CHAT_TEMPLATES, group="data")
    learning_rate: float = opt(5e-5, "Peak learning rate.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method in ("lora", "dora"):
            if self.lora_r < 1:
                raise ConfigError("lora_r", f"must be at least 1, got {self.lora_r}")
            if not 0 <= self.lora_dropout < 1:
                raise ConfigError("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")


@dataclass
class DPOJobConfig(AlignCommonConfig):
    """Direct preference optimisation and its family on prompt/chosen/rejected pairs."""

    kind: typing.ClassVar[str] = "dpo"

    loss_type: str = opt(
        "sigmoid",
        "sigmoid: DPO; ipo; hinge (SLiC); robust (noisy labels); bco_pair; apo_zero; simpo "
        "(reference-free, length-normalised); orpo (odds ratio, no reference).",
        DPO_LOSSES, group="method",
    )
    beta: float = opt(0.1, "Strength of the pull towards the reference (higher: stay closer).", group="method")
    label_smoothing: float = opt(0.0, "Assumed share of flipped labels (robust / conservative DPO).", group="method")
    simpo_gamma: float = opt(0.5, "SimPO target reward margin.", group="method")
    sft_weight: float = opt(
        0.0,
        "Weight of a log-likelihood term on the chosen answers added to the preference loss (RPO): "
        "keeps the chosen wording and its stop token likely while the rejected ones are pushed "
        "down. 0: the preference loss alone. Losses sigmoid/ipo/hinge/robust/bco_pair/apo_zero.",
        group="method",
    )
    precompute_ref_log_probs: bool = opt(
        True, "Compute the reference log-probs once before training instead of every step (faster).", group="method"
    )
    padding_free: bool = opt(
        True,
        "Lay the real tokens of each batch end to end instead of padding every answer to the "
        "longest (same numbers, less compute; losses sigmoid/ipo/hinge/robust/bco_pair/apo_zero).",
        group="method",
    )

    method: str = opt("lora", PREFERENCE_METHOD_HELP, ALIGN_METHODS, group="method")
    num_virtual_tokens: int = virtual_tokens_opt()
    ia3_target_modules: list[str] = ia3_targets_opt()
    ia3_feedforward_modules: list[str] = ia3_feedforward_opt()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method_fields(self)
        if self.beta <= 0:
            raise ConfigError("beta", f"must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError("label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        if self.sft_weight < 0:
            raise ConfigError("sft_weight", f"must be >= 0, got {self.sft_weight}")
        if self.sft_weight > 0 and self.loss_type in ("simpo", "orpo"):
            raise ConfigError("sft_weight", f"{self.loss_type} has its own likelihood term; set sft_weight = 0")


@dataclass
class KTOJobConfig(AlignCommonConfig):
    """KTO on unpaired examples labelled desirable / undesirable."""

    kind: typing.ClassVar[str] = "kto"

    beta: float = opt(0.1, "Strength of the pull towards the reference.", group="method")
    desirable_weight: float = opt(1.0, "Loss weight of desirable examples.", group="method")
    undesirable_weight: float = opt(1.0, "Loss weight of undesirable examples.", group="method")
    precompute_ref_log_probs: bool = opt(True, "Compute the reference log-probs once before training.", group="method")
    padding_free: bool = opt(
        True, "Lay the real tokens of each batch end to end instead of padding (same numbers, less compute).",
        group="method",
    )

    method: str = opt("lora", PREFERENCE_METHOD_HELP, ALIGN_METHODS, group="method")
    num_virtual_tokens: int = virtual_tokens_opt()
    ia3_target_modules: list[str] = ia3_targets_opt()
    ia3_feedforward_modules: list[str] = ia3_feedforward_opt()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method_fields(self)
        if self.beta <= 0:
            raise ConfigError("beta", f"must be > 0, got {self.beta}")


@dataclass
class RewardJobConfig(AlignCommonConfig):
    """A Bradley-Terry reward model: LoRA plus a scalar head on preference pairs."""

    kind: typing.ClassVar[str] = "reward"

    center_rewards_coefficient: float = opt(
        0.01, "Pushes rewards towards zero mean (0: off).", group="method"
    )
    learning_rate: float = opt(1e-4, "Peak learning rate.")


@dataclass
class PPOJobConfig(AlignCommonConfig):
    """PPO with a value head, per-token KL penalty to the reference, GAE and a clipped objective."""

    kind: typing.ClassVar[str] = "ppo"

    reward: str = opt("verifier:demo", REWARD_SOURCE_HELP, group="reward")
    kl_coef: float = opt(0.05, "β of the per-token KL penalty (reward − β·KL).", group="reward")
    adaptive_kl: bool = opt(False, "Adapt β to keep the KL near target_kl.", group="reward")
    target_kl: float = opt(1.0, "KL (nats per response) the adaptive controller aims for.", group="reward")
    gamma: float = opt(1.0, "Discount factor.", group="ppo")
    lam: float = opt(0.95, "GAE λ.", group="ppo")
    cliprange: float = opt(0.2, "Policy ratio clip ε.", group="ppo")
    cliprange_value: float = opt(0.2, "Value clip.", group="ppo")
    vf_coef: float = opt(0.5, "Value-loss weight.", group="ppo")
    ppo_epochs: int = opt(4, "Optimisation passes over each rollout batch.", group="ppo")
    rollout_batch_size: int = opt(16, "Prompts answered per rollout.", group="ppo")
    mini_batch_size: int = opt(8, "Responses per optimiser step inside a PPO epoch.", group="ppo")
    max_new_tokens: int = opt(24, "Longest response generated in a rollout.", group="ppo")
    temperature: float = opt(1.0, "Sampling temperature of rollouts.", group="ppo")
    whiten_advantages: bool = opt(True, "Normalise advantages per batch.", group="ppo")
    learning_rate: float = opt(1e-4, "Peak learning rate.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reward(self.reward)
        if self.kl_coef < 0:
            raise ConfigError("kl_coef", f"must be ≥ 0, got {self.kl_coef}")
        if not 0 < self.cliprange < 1:
            raise ConfigError("cliprange", f"must be in (0, 1), got {self.cliprange}")
        if self.mini_batch_size > self.rollout_batch_size:
            raise ConfigError("mini_batch_size", "must not exceed rollout_batch_size")
        if self.ppo_epochs < 1 or self.max_new_tokens < 1:
            raise ConfigError("ppo_epochs", "ppo_epochs and max_new_tokens must be at least 1")


@dataclass
class GRPOJobConfig(AlignCommonConfig):
    """GRPO (TRL): group-relative advantages over several sampled answers per prompt."""

    kind: typing.ClassVar[str] = "grpo"

    reward: str = opt("verifier:demo", REWARD_SOURCE_HELP, group="reward")
    num_generations: int = opt(4, "Answers sampled per prompt (the group).", group="rl")
    max_completion_length: int = opt(24, "Longest sampled answer.", group="rl")
    beta: float = opt(0.04, "KL penalty to the reference (0: none, no reference pass).", group="rl")
    temperature: float = opt(1.0, "Sampling temperature.", group="rl")
    learning_rate: float = opt(1e-4, "Peak learning rate.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reward(self.reward)
        if self.num_generations < 2:
            raise ConfigError("num_generations", "needs at least 2 answers per prompt")


@dataclass
class RLOOJobConfig(GRPOJobConfig):
    """RLOO (TRL): REINFORCE with the leave-one-out baseline."""

    kind: typing.ClassVar[str] = "rloo"

    num_generations: int = opt(4, "Answers sampled per prompt (each is baselined on the others).", group="rl")
    beta: float = opt(0.05, "KL penalty to the reference.", group="rl")


def _check_reward(spec: str) -> None:
    scheme, _, rest = spec.partition(":")
    if scheme == "verifier" and rest == "demo":
        return
    if scheme == "run" and rest.isdigit():
        return
    if scheme == "python" and ":" in rest:
        return
    raise ConfigError("reward", f"{spec!r} is not a reward source. {REWARD_SOURCE_HELP}")
