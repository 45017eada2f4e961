"""Errors the Store raises, worded for the person at the keyboard."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store problems that are not plain bad arguments (those are ValueError)."""


class NotFound(StoreError, LookupError):
    """A row asked for by id does not exist."""

    def __init__(self, what: str, id: object):
        super().__init__(f"No {what} with id {id!r} in the store.")
        self.what = what
        self.id = id


class DuplicateLabel(StoreError):
    """A task already has a live label; undo it first to relabel."""

    def __init__(self, task_id: int, event_id: int):
        super().__init__(
            f"Task {task_id} is already labelled (event {event_id}); undo that label to change it."
        )
        self.task_id = task_id
        self.event_id = event_id
