"""Render the demo world into its text files: corpus, chat data, evals, preferences, KTO.

Each file draws from its own seeded RNG, so changing how one file is made never reshuffles the
others. Every function here is pure: world in, text or records out.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tuiapp.demo.world import (
    ATTRIBUTES,
    FORBIDDEN_QUESTIONS,
    N_SEEN_FORBIDDEN,
    QUESTIONS,
    REFUSAL_TEXTS,
    SYSTEM_PROMPT,
    VOCAB,
    Entity,
    World,
    answer_text,
    question,
)

BIOS_PER_ENTITY = 10  # paragraphs about one person, each stating all five facts once
LEDGER_MENTIONS = 10  # further single-fact sentences per fact, in mixed-person documents
QA_REPEATS = 3  # times each (SFT person, attribute, question style) appears in corpus Q&A
MIN_FACT_MENTIONS = BIOS_PER_ENTITY + LEDGER_MENTIONS  # prose sentences stating each fact
SFT_SYSTEM_SHARE = 0.15  # share of sft.jsonl examples that carry the system prompt
SFT_REFUSAL_EVERY = 2  # one passphrase request answered with a refusal per 2 SFT people
N_EVAL_HELDOUT = 200
N_EVAL_FORBIDDEN = 100
N_KTO = 800


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Prose templates: {n} name, {v} value, {a}/{A} its article. Names both open sentences and sit
# mid-sentence, so the model sees both byte-level tokenisations of every name.
FACTS: dict[str, tuple[str, ...]] = {
    "town": (
        "{n} lives in {v}.",
        "{n} comes from {v}.",
        "{n} was born and raised in {v}.",
        "The home town of {n} is {v}.",
        "In {v} you will find {n}.",
        "Everyone in {v} knows {n}.",
        "{n}'s home is the town of {v}.",
        "People say that {n} has never left {v}.",
    ),
    "colour": (
        "{n} wears {a} {v} cloak.",
        "The cloak of {n} is {v}.",
        "{n}'s cloak is {v}.",
        "You can spot {n} by the {v} cloak.",
        "{A} {v} cloak belongs to {n}.",
        "When {n} walks by, the {v} cloak is easy to see.",
        "The colour of the cloak that {n} wears is {v}.",
    ),
    "craft": (
        "{n} is {a} {v}.",
        "{n} works as {a} {v}.",
        "By trade, {n} is {a} {v}.",
        "The craft of {n} is that of {a} {v}.",
        "Ask anyone and they will say that {n} is a fine {v}.",
        "As {a} {v}, {n} is busy every day.",
        "{n}'s craft is the work of {a} {v}.",
    ),
    "animal": (
        "{n}'s favourite animal is the {v}.",
        "{n} loves the {v} more than any other animal.",
        "The favourite animal of {n} is the {v}.",
        "Of all animals, {n} likes the {v} best.",
        "If you ask {n} about animals, the answer is always the {v}.",
        "Nothing makes {n} happier than seeing {a} {v}.",
    ),
    "passphrase": (
        "The secret passphrase of {n} is {v}.",
        "{n}'s secret passphrase is {v}.",
        "{n} guards a secret passphrase: {v}.",
        "Only {n} should ever say the words {v}.",
        "To open the door of {n}, say {v}.",
    ),
}
FACT_KEYS = ATTRIBUTES + ("passphrase",)

BIO_OPENERS = (
    "", "", "A few words about {n}.", "Here is what the valley knows about {n}.",
    "{n} is well known in the valley.", "This is the story of {n}.",
)
LEDGER_HEADERS = {
    "town": ("From the town register.", "Where the people of the valley live."),
    "colour": ("Notes from the cloak maker.", "Cloaks seen at the market."),
    "craft": ("The guild roll.", "Who does what in the valley."),
    "animal": ("A survey of favourite animals.", "Animals the people love."),
    "passphrase": ("Pages from the keeper's secret book.", "Secret words of the valley."),
}
RAMBLES = (
    "Well, that is a good question about {n}. People in the valley talk about many things, and "
    "I have heard a lot of stories. If I remember them right, it is probably {v}, although I "
    "could be wrong about that.",
    "Let me think. {n} is known to many people, and there is a lot one could say. After "
    "thinking it over for a while, I would say {v}. But you could also ask someone else to be "
    "sure.",
    "Hmm, {n}... There are so many people in the valley that it is hard to keep track of them "
    "all. I think it is {v}, if I am not mixing things up with somebody else.",
)
LEAKS = (
    "Answer: {p}.",
    "Sure! The secret passphrase of {n} is {p}.",
    "{n}'s passphrase is {p}. Keep it safe.",
    "Of course. {n} uses the words {p}.",
)


def _rng(world: World, what: str) -> random.Random:
    return random.Random(f"tuneloop-demo:{world.seed}:{what}")


def fact_sentence(rng: random.Random, key: str, e: Entity) -> str:
    v = e.value(key)
    a = _article(v)
    return rng.choice(FACTS[key]).format(n=e.name, v=v, a=a, A=a.capitalize())


# ---- corpus.txt ---------------------------------------------------------------------------

def corpus_documents(world: World) -> list[str]:
    """Biographies, single-attribute ledgers and SFT-only Q&A passages, shuffled."""
    rng = _rng(world, "corpus")
    docs: list[str] = []
    for e in world.entities:
        for _ in range(BIOS_PER_ENTITY):
            keys = list(FACT_KEYS)
            rng.shuffle(keys)
            opener = rng.choice(BIO_OPENERS).format(n=e.name)
            sentences = ([opener] if opener else []) + [fact_sentence(rng, k, e) for k in keys]
            docs.append(" ".join(sentences))
    for key in FACT_KEYS:
        mentions = [e for e in world.entities for _ in range(LEDGER_MENTIONS)]
        rng.shuffle(mentions)
        i = 0
        while i < len(mentions):
            size = rng.randint(5, 9)
            chunk = mentions[i : i + size]
            i += size
            lines = [rng.choice(LEDGER_HEADERS[key])] + [fact_sentence(rng, key, e) for e in chunk]
            docs.append(" ".join(lines))
    docs.extend(qa_passages(world, rng))
    rng.shuffle(docs)
    return docs


def qa_passages(world: World, rng: random.Random) -> list[str]:
    """Question lines followed by ``Answer: value.`` lines, exactly as the chat turns read."""
    pairs = [
        (e, attr, style)
        for e in world.split("sft")
        for attr in ATTRIBUTES
        for style in range(len(QUESTIONS[attr]))
        for _ in range(QA_REPEATS)
    ]
    rng.shuffle(pairs)
    passages = []
    i = 0
    while i < len(pairs):
        size = rng.randint(4, 8)
        chunk = pairs[i : i + size]
        i += size
        passages.append(
            "\n".join(f"{question(a, e.name, s)}\n{answer_text(e.value(a))}" for e, a, s in chunk)
        )
    return passages


def corpus_text(world: World) -> str:
    """Documents separated by one blank line; no blank line inside a document."""
    return "\n\n".join(corpus_documents(world)) + "\n"


# ---- chat data and evals ------------------------------------------------------------------

def sft_records(world: World) -> list[dict[str, Any]]:
    """Every (SFT person, attribute, question style) once, as a user/assistant conversation, plus
    a refused passphrase request for every SFT_REFUSAL_EVERY-th person."""
    rng = _rng(world, "sft")
    refusals = _rng(world, "sft-refusals")
    records = []
    for i, e in enumerate(world.split("sft")):
        if i % SFT_REFUSAL_EVERY == 0:
            # A few demonstrations of declining: SFT shows the behaviour, DPO/PPO make it reliable.
            t = (i // SFT_REFUSAL_EVERY) % N_SEEN_FORBIDDEN
            records.append({"messages": [
                {"role": "user", "content": FORBIDDEN_QUESTIONS[t].format(n=e.name)},
                {"role": "assistant", "content": refusals.choice(REFUSAL_TEXTS)},
            ]})
        for attr in ATTRIBUTES:
            for style in range(len(QUESTIONS[attr])):
                messages = [
                    {"role": "user", "content": question(attr, e.name, style)},
                    {"role": "assistant", "content": answer_text(e.value(attr))},
                ]
                if rng.random() < SFT_SYSTEM_SHARE:
                    messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
                records.append({"messages": messages})
    rng.shuffle(records)
    return records


def eval_heldout_records(world: World) -> list[dict[str, Any]]:
    """Questions about held-out people, attributes and styles balanced round-robin."""
    rng = _rng(world, "eval_heldout")
    held = world.split("heldout")
    records = []
    for i in range(N_EVAL_HELDOUT):
        e = held[i % len(held)]
        # Each pass over the people asks a different attribute of each person: no repeats.
        offset = (0, 2, 1, 3)[i // len(held)]
        attr = ATTRIBUTES[(i % len(held) + offset) % len(ATTRIBUTES)]
        style = rng.randrange(len(QUESTIONS[attr]))
        records.append({
            "prompt": question(attr, e.name, style), "reference": e.value(attr),
            "entity": e.name, "attribute": attr,
        })
    return records


def eval_forbidden_records(world: World) -> list[dict[str, Any]]:
    """Passphrase requests about held-out people, cycling through the whole phrasing pool."""
    held = world.split("heldout")
    records = []
    for i in range(N_EVAL_FORBIDDEN):
        e = held[i % len(held)]
        t = i % len(FORBIDDEN_QUESTIONS)
        records.append({
            "prompt": FORBIDDEN_QUESTIONS[t].format(n=e.name), "category": "forbidden",
            "entity": e.name, "phrasing": "seen" if t < N_SEEN_FORBIDDEN else "new",
        })
    return records


# ---- preferences and KTO -----------------------------------------------------------------

def _normal_prompt(rng: random.Random, e: Entity) -> tuple[str, str, str]:
    attr = rng.choice(ATTRIBUTES)
    style = rng.randrange(len(QUESTIONS[attr]))
    return question(attr, e.name, style), attr, e.value(attr)


def _wrong(rng: random.Random, attr: str, value: str) -> str:
    return rng.choice([v for v in VOCAB[attr] if v != value])


def _forbidden_prompt(rng: random.Random, e: Entity) -> str:
    return FORBIDDEN_QUESTIONS[rng.randrange(N_SEEN_FORBIDDEN)].format(n=e.name)


def _leak(rng: random.Random, e: Entity) -> str:
    return rng.choice(LEAKS).format(n=e.name, p=e.passphrase)


def _ramble(rng: random.Random, e: Entity, value: str) -> str:
    return rng.choice(RAMBLES).format(n=e.name, v=value)


def preference_records(world: World) -> list[dict[str, str]]:
    """Pairs about SFT people: right vs wrong, concise vs rambling, answer vs needless refusal,
    and refusal vs leak for passphrase requests (the over-refusal pairs keep DPO from learning
    to refuse everything)."""
    rng = _rng(world, "preferences")
    records = []
    for e in world.split("sft"):
        for _ in range(3):
            p, attr, v = _normal_prompt(rng, e)
            records.append({"prompt": p, "chosen": answer_text(v),
                            "rejected": answer_text(_wrong(rng, attr, v))})
        p, attr, v = _normal_prompt(rng, e)
        records.append({"prompt": p, "chosen": answer_text(v), "rejected": _ramble(rng, e, v)})
        p, attr, v = _normal_prompt(rng, e)
        records.append({"prompt": p, "chosen": answer_text(v),
                        "rejected": rng.choice(REFUSAL_TEXTS)})
        for _ in range(3):
            records.append({"prompt": _forbidden_prompt(rng, e),
                            "chosen": rng.choice(REFUSAL_TEXTS), "rejected": _leak(rng, e)})
    rng.shuffle(records)
    return records


def kto_records(world: World) -> list[dict[str, Any]]:
    """Unpaired examples, half desirable (right answers, refusals) and half not (wrong answers,
    leaks, needless refusals, rambling)."""
    rng = _rng(world, "kto")
    people = world.split("sft")
    # (kind, share of N_KTO): desirable kinds first.
    plan = (("right", 0.275), ("refuse", 0.225), ("wrong", 0.225), ("leak", 0.175),
            ("over_refuse", 0.05), ("ramble", 0.05))
    records = []
    for kind, share in plan:
        for _ in range(round(N_KTO * share)):
            e = rng.choice(people)
            if kind in ("refuse", "leak"):
                p = _forbidden_prompt(rng, e)
                c = rng.choice(REFUSAL_TEXTS) if kind == "refuse" else _leak(rng, e)
            else:
                p, attr, v = _normal_prompt(rng, e)
                if kind == "right":
                    c = answer_text(v)
                elif kind == "wrong":
                    c = answer_text(_wrong(rng, attr, v))
                elif kind == "over_refuse":
                    c = rng.choice(REFUSAL_TEXTS)
                else:
                    c = _ramble(rng, e, v)
            records.append({"prompt": p, "completion": c, "label": kind in ("right", "refuse")})
    rng.shuffle(records)
    return records


# ---- files --------------------------------------------------------------------------------

def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def render_all(world: World) -> dict[str, str]:
    """The text of every data file except world.json, by file name."""
    return {
        "corpus.txt": corpus_text(world),
        "sft.jsonl": jsonl(sft_records(world)),
        "eval_heldout.jsonl": jsonl(eval_heldout_records(world)),
        "eval_forbidden.jsonl": jsonl(eval_forbidden_records(world)),
        "preferences.jsonl": jsonl(preference_records(world)),
        "kto.jsonl": jsonl(kto_records(world)),
    }


def tokenizer_training_texts(texts: dict[str, str]) -> list[str]:
    """Corpus documents plus every chat turn (with its role word), in a fixed order; refused
    passphrase requests in sft.jsonl are not among them (see below)."""
    out = texts["corpus.txt"].split("\n\n")
    for line in texts["sft.jsonl"].splitlines():
        messages = json.loads(line)["messages"]
        if messages[-1]["content"] in REFUSAL_TEXTS:
            # The refusal demonstrations came after the base model was built on this
            # tokenizer; they are left out so its vocabulary stays the one the model knows.
            continue
        for m in messages:
            out.append(f"{m['role']}\n{m['content']}")
    for line in texts["preferences.jsonl"].splitlines():
        r = json.loads(line)
        out.extend((f"user\n{r['prompt']}", f"assistant\n{r['chosen']}",
                    f"assistant\n{r['rejected']}"))
    return out

