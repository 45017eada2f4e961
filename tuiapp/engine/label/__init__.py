"""The labelling room: preference labels and what they become.

    tasks.py    label tasks made from models' answers, the task feeder, stats, and the export of
                live labels to a new immutable preference dataset version
    winrate.py  wins/ties/losses and Bradley-Terry strengths with bootstrap intervals
    judge.py    an AI judge labels pairs by a constitution, both orders, position flips counted
    agreement.py  judge vs person: raw agreement, Cohen's kappa, flip rate, disagreements

May import: ``engine.data``, ``engine.infer``.
"""
