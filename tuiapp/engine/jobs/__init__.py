"""The jobs room: starting, watching, cancelling and resuming training jobs.

    runner.py     queue, start, poll, cancel, resume; one child process per job
    child.py      what runs inside that child: config -> algorithm -> events as JSON lines
    preflight.py  what a job will need (memory, tokens, time) before anything heavy loads
    resolve.py    which model a config means, resolved for pre-flight

May import: ``engine.data``, ``engine.train``, ``engine.context``, ``engine.events``.
"""
