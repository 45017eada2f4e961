"""The labelling room: preference labels and what they become.

    tasks.py    label tasks made from models' answers, the task feeder, stats, and the export of
                live labels to a new immutable preference dataset version
    winrate.py  wins/ties/losses and Bradley-Terry strengths with bootstrap intervals

May import: ``engine.data``, ``engine.infer``.
"""
