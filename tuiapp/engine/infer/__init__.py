"""The inference room: models answering prompts.

    generate.py    Generator: one loaded base with adapters hot-swapped, or a GGUF via llama.cpp
    params.py      GenerationParams, chunks and the prompt rendering both backends share
    model_refs.py  REFs (base, run:ID, folders, GGUF files) resolved to what to load
    gguf_file.py   reading a GGUF file's metadata and opening it with llama.cpp
    evaluate.py    prompt sets, batch evaluation and its scorers

May import: ``engine.data``, ``engine.train`` (model loading), ``engine.context`` and the demo
world's checker. Never ``engine.jobs``, ``engine.label`` or ``engine.export``.
"""
