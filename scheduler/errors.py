"""Errors raised by the scheduler core.

Like h11's ``LocalProtocolError``: an event that is not valid in the current
state of the task or replica it names is rejected loudly, and the core's state
is left exactly as it was before the event.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class of every error the scheduler package raises."""


class InvalidEvent(SchedulerError):
    """An event that the current state does not allow (or that names an unknown
    task or replica, or whose time goes backwards).

    ``event`` is the offending event; ``state`` the state it was checked
    against (``None`` where the entity does not exist).
    """

    def __init__(self, message: str, event: object = None, state: object = None) -> None:
        super().__init__(message)
        self.event = event
        self.state = state
