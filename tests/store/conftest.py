"""Fixtures for the store tests: an in-memory Store and a file-backed one."""

from __future__ import annotations

import pytest

from store import Store


@pytest.fixture
def store():
    s = Store()
    yield s
    s.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "home" / "tuneloop.db"


@pytest.fixture
def file_store(db_path):
    s = Store(db_path)
    yield s
    s.close()


@pytest.fixture
def make_task(store):
    """Create a two-candidate label task in ``store``."""

    def make(task_set: str | None = "set1", prompt: str = "Say hi", s: Store | None = None):
        return (s or store).create_label_task(
            prompt,
            [{"model_ref": "base", "output": "hi"}, {"model_ref": "sft:1", "output": "hello!"}],
            task_set=task_set,
        )

    return make
