"""FailureLog: failures no error handler took, logged so a storm cannot flood the log.

A queue whose items fail by the thousand (a service down, say) must not write a
traceback per item: the first failure of each exception type is logged with its
traceback, later ones only as a count, at each power of two, and once more, as a
count by type, when the queue stops.
"""

from __future__ import annotations

import logging

__all__ = ["FailureLog"]


class FailureLog:
    """One queue's log of the failures that no error handler took.

    ``logger`` is where the lines go; the queue's other messages (a handler that
    failed, a worker function that returned no awaitable) go there too.
    """

    __slots__ = ("_by_type", "_unlogged", "logger")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._by_type: dict[str, int] = {}  # failures by exception type
        self._unlogged = 0  # of those, how many since the last line

    def log(self, exc: Exception, item: object) -> None:
        """Log that the call on ``item`` failed with ``exc``, unless only counted."""
        name = type(exc).__qualname__
        count = self._by_type[name] = self._by_type.get(name, 0) + 1
        if count == 1:
            self.logger.error("worker_func failed on %r", item, exc_info=exc)
            return
        self._unlogged += 1
        if count & (count - 1) == 0:
            self.logger.error(
                "worker_func has failed %d times with %s (the traceback of the "
                "first was logged); the latest on %r: %s",
                count,
                name,
                item,
                exc,
            )
            self._unlogged = 0

    def log_counts(self) -> None:
        """Log the count of failures by type, if some have gone unlogged since
        the last line (the queue calls this as it stops)."""
        if self._unlogged:
            self.logger.error(
                "worker_func failures no error_handler took, by type: %s",
                ", ".join(f"{n}: {c}" for n, c in self._by_type.items()),
            )
            self._unlogged = 0
