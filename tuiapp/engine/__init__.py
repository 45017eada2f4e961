"""Headless engine of tuneloop, in rooms named for the stages of the loop.

    data/    dataset files: reading, detecting, validating, normalising, token statistics
    train/   one file per algorithm (sft, cpt, dpo+kto, reward, ppo, grpo/rloo), the model and
             PEFT loading they share, padding-free batching, callbacks, reward sources, configs
    jobs/    the runner and its child process, pre-flight, model resolution for pre-flight
    infer/   generation (transformers with adapter hot-swap, llama.cpp), model references,
             evaluation and its scorers
    label/   label tasks, the label writer, exports to preference versions, win-rates
    export/  merge, GGUF writing and vocab, quantize, parity, Modelfile, model card

    context.py  the job context the algorithms run in (below train/ and jobs/ alike)
    events.py   the event types and sinks jobs emit into
    facade.py   Engine: the one object the UI is given

Imports run down the loop: data <- train <- jobs; data, train <- infer <- label, export. No room
imports a room above it (tests/engine/test_layout.py checks the graph). No Textual anywhere here,
and heavy libraries (torch, transformers, ...) only inside the functions that need them.
"""
