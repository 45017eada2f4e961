"""The training room: one self-contained file per algorithm, read top to bottom (data -> model ->
PEFT/bitsandbytes -> trainer -> train -> save).

    sft.py cpt.py dpo.py (DPO and KTO) reward.py ppo.py rl.py (GRPO, RLOO)
    modeling.py       model/tokenizer loading, LoRA/QLoRA set-up, chat templates, checkpointing
    policy.py         where a policy starts (base, SFT run, checkpoint) and loading it
    padding_free.py   packing DPO/KTO pairs end to end for TRL's fused forward
    callbacks.py      the TrainerCallback that emits events, checkpoints and samples
    reward_sources.py verifier, reward-model and Python rewards for PPO/GRPO/RLOO
    config*.py        job configs: base fields, supervised kinds, alignment kinds, the registry

May import: ``engine.data``, ``engine.context``, ``engine.events`` and the demo world's checker
(``tuiapp.demo.world``). Never the runner (``engine.jobs``): the runner starts these.
"""
