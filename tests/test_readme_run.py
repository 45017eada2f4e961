"""The README's first command, `./dev.sh run`, opens the TUI: run it in a real pseudo-terminal on a
fresh home, read the screen it draws, press `q`, and see it exit cleanly.

The suite itself runs under `./dev.sh test`, so `.venv` is set up and `dev.sh run` goes straight
to the app; where the suite runs from another interpreter without `.venv`, the test skips.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
AREAS = ("Datasets", "Train", "Runs", "Compare", "Label", "Export")


def _read_until(fd: int, proc: subprocess.Popen, wanted, deadline: float) -> str:
    seen = b""
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
            if wanted(ANSI.sub("", seen.decode("utf-8", "replace"))):
                break
    return ANSI.sub("", seen.decode("utf-8", "replace"))


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "tuneloop").exists(), reason="needs ./dev.sh setup")
def test_dev_sh_run_opens_the_tui_on_a_fresh_home(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TEXTUAL"))}
    env.update(TERM="xterm-256color", TUNELOOP_HOME=str(tmp_path / "home"), COLUMNS="160", LINES="48")
    proc = subprocess.Popen(
        ["./dev.sh", "run"], cwd=REPO, stdin=follower, stdout=follower, stderr=follower,
        env=env, start_new_session=True, close_fds=True,
    )
    os.close(follower)
    try:
        screen = _read_until(
            leader, proc, lambda text: all(area in text for area in AREAS), time.monotonic() + 90
        )
        assert proc.poll() is None, f"dev.sh run ended before the app drew: {screen[-2000:]}"
        missing = [area for area in AREAS if area not in screen]
        assert not missing, f"areas not drawn: {missing}; screen: {screen[-2000:]}"
        # The demo workspace: the fresh home was seeded with the demo datasets.
        assert (tmp_path / "home" / "tuneloop.db").exists()
        os.write(leader, b"q")
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            _read_until(leader, proc, lambda _t: False, min(deadline, time.monotonic() + 0.5))
        assert proc.poll() == 0, "q did not quit the app cleanly"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        os.close(leader)
