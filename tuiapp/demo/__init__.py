"""The demo world: an invented valley of people, generated from a seed, small enough that a model
pre-trained on it in minutes on a CPU visibly improves through SFT, DPO and PPO.

    world.py      the world model, question/answer forms and the verifier (used by engine scorers)
    texts.py      the corpus, chat, eval, preference and KTO files rendered from the world
    tokenizer.py  the demo tokenizer, trained on those texts
    files.py      writing and checking sample_data/demo/, the manifest, ``demo info``
    base.py       pre-training the demo base model
    proof.py      the demo proof: base -> SFT -> DPO -> reward -> PPO, measured

world, texts and tokenizer import only the standard library and ``engine.data``; base and proof
sit above the engine and use it like any user.
"""
