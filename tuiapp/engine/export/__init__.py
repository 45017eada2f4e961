"""The export room: a run or model folder out as files llama.cpp and Ollama load.

    job.py        the export plan and run: merge -> GGUF -> quantize -> parity -> Modelfile/card
    child.py      the child process an export runs in
    steps.py      merging an adapter, quantize types, predicted sizes, quantizing
    gguf.py       writing an HF model as GGUF; vocab.py its tokenizer as GGUF vocab
    parity.py     logits and greedy text of the HF model vs the GGUF
    modelfile.py  the Ollama Modelfile; model_card.py the model card

May import: ``engine.infer`` (model references, GGUF reading), ``engine.train`` (loading).
"""
