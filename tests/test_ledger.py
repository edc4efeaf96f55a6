"""EventLedger: what an Executor knows of each event, with nothing written on it.

An event is claimed once, by one executor, for ever; the claim is kept by
``id(event)`` in the ledger, not on the event. The ledger settles each event
(COMPLETED, FAILED, CANCELLED), keeps the histories and the counts, and hands
each settled event's outcome to a sink set for it.
"""

from __future__ import annotations

import gc
import inspect
from dataclasses import dataclass, field

import anyio
import pytest

from sluicegate import Event, Execution, ExecutionStatus, Outcome
from sluicegate._calls import Sink
from sluicegate._ledger import _HELD, EventLedger, claimed


class Job(Event[str]):
    async def invoke(self) -> str:
        await anyio.lowlevel.checkpoint()
        return "done"


class Other(Event[None]):
    async def invoke(self) -> None:
        pass


class OwnNames(Job):
    """A user's event with attributes of its own named as the Executor's were."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = "mine"
        self._sink = "mine too"


@dataclass
class ValueEvent(Event[str]):
    """Equal events that are not one event; unhashable (eq without hash)."""

    name: str
    execution: Execution[str] = field(default_factory=Execution)

    def __post_init__(self) -> None:
        super().__init__()

    async def invoke(self) -> str:
        return self.name


def ledger(history: int | None = None) -> EventLedger[Job]:
    return EventLedger(Job, history)


# -- claims ---------------------------------------------------------------------------


def test_a_claim_writes_nothing_on_the_event() -> None:
    event = Job()
    ledger().claim(event)
    assert set(vars(event)) == {"_id", "execution"}


def test_an_event_is_claimed_once() -> None:
    mine, theirs = ledger(), ledger()
    event = Job()
    assert not claimed(event)
    mine.claim(event)
    assert claimed(event)
    with pytest.raises(ValueError, match="already given to this executor"):
        mine.claim(event)
    with pytest.raises(ValueError, match="already given to another executor"):
        theirs.claim(event)


def test_a_claim_checks_the_event_type() -> None:
    with pytest.raises(TypeError, match="event must be an instance of Job, got Other"):
        ledger().claim(Other())  # type: ignore[arg-type]
    assert not claimed(Other())


def test_a_released_claim_may_be_claimed_again() -> None:
    mine, theirs = ledger(), ledger()
    event = Job()
    mine.claim(event)
    mine.release(event)
    assert not claimed(event)
    theirs.claim(event)
    theirs.release(event)
    mine.claim(event)


def test_a_settled_event_stays_claimed_for_ever() -> None:
    mine, theirs, forgetful = ledger(), ledger(), ledger(history=0)
    done, cancelled = Job(), Job()
    for event in (done, cancelled):
        mine.claim(event)
    mine.complete(done, "ok")
    mine.cancel(cancelled)
    for event in (done, cancelled):
        assert claimed(event)
        with pytest.raises(ValueError, match="already given to this executor"):
            mine.claim(event)
        with pytest.raises(ValueError, match="already given to another executor"):
            theirs.claim(event)
    forgotten = Job()
    forgetful.claim(forgotten)
    forgetful.complete(forgotten, "ok")
    # Its history keeps none: it cannot tell whether it ran the event.
    with pytest.raises(ValueError, match="already given to an executor"):
        forgetful.claim(forgotten)


def start(led: EventLedger[Job], event: Job) -> None:
    """Start ``event``'s call, as a worker does, and close it unawaited."""
    call = led.start(event)
    assert inspect.iscoroutine(call)
    call.close()


def outcomes_into(seen: list[Outcome[Job, object]]) -> Sink[Job]:
    """A sink that keeps each outcome it is told, as an Outcome."""

    def sink(
        item: Job,
        value: object,
        error: Exception | None,
        attempts: int,
        duration: float,
    ) -> None:
        seen.append(Outcome(item, value, error, attempts, duration))

    return sink


def test_user_attributes_named_like_the_old_claims_do_not_matter() -> None:
    led = ledger()
    event = OwnNames()
    led.claim(event)
    seen: list[Outcome[Job, object]] = []
    led.deliver_to(event, outcomes_into(seen))
    led.complete(event, "ok")
    assert [outcome.item for outcome in seen] == [event]
    assert (event._executor, event._sink) == ("mine", "mine too")


def test_equal_events_are_distinct_events() -> None:
    led: EventLedger[ValueEvent] = EventLedger(ValueEvent, None)
    first, second = ValueEvent("a"), ValueEvent("a")
    assert first == second
    led.claim(first)
    led.claim(second)
    led.drawn[id(first)] = first
    assert led.pending_events() == [first]
    assert led.pending_events()[0] is first
    led.complete(second, "a")
    assert list(led.completed) == [second]
    assert led.completed[0] is second
    assert _HELD.get(id(first)) is not None, "first is still held"


def test_an_event_of_a_ledger_that_is_gone_and_never_ran_it_may_be_given_again() -> (
    None
):
    event = Job()
    gone = ledger()
    gone.claim(event)
    del gone
    gc.collect()
    assert not claimed(event)
    ledger().claim(event)


def test_the_claims_of_ledgers_that_are_gone_are_dropped() -> None:
    gc.collect()
    before = len(_HELD)
    events = [Job() for _ in range(2 * before + 10)]
    gone = ledger()
    for event in events:
        gone.claim(event)
    del gone
    gc.collect()
    assert len(_HELD) <= before
    for event in events:
        assert not claimed(event)


# -- settling -------------------------------------------------------------------------


def test_complete_fills_the_execution_and_counts() -> None:
    led = ledger()
    event = Job()
    led.claim(event)
    led.complete(event, "ok")
    execution = event.execution
    assert (execution.status, execution.response, execution.error) == (
        ExecutionStatus.COMPLETED,
        "ok",
        None,
    )
    assert list(led.completed) == [event]
    assert led.counts() == {"completed": 1, "failed": 0, "cancelled": 0}


def test_fail_fills_the_execution_and_counts() -> None:
    led = ledger()
    event = Job()
    led.claim(event)
    error = ValueError("no")
    led.fail(event, error)
    assert (event.execution.status, event.execution.error) == (
        ExecutionStatus.FAILED,
        error,
    )
    assert list(led.failed) == [event]
    assert led.counts() == {"completed": 0, "failed": 1, "cancelled": 0}


def test_record_settles_from_an_outcome_with_its_last_calls_duration() -> None:
    led = ledger()
    times = iter([10.0, 13.5])
    led.now = lambda: next(times)
    ok, bad = Job(), Job()
    for event in (ok, bad):
        led.claim(event)
    error = KeyError("k")
    start(led, ok)  # its one call: the outcome's duration is its own
    start(led, bad)
    start(led, bad)  # a retry, started at 10 (and settled at 13.5)
    led.record(ok, "ok", None, 1, 1.5)
    led.record(bad, None, error, 2, 9.0)  # 9 s span every attempt
    assert (ok.execution.status, ok.execution.response) == (
        ExecutionStatus.COMPLETED,
        "ok",
    )
    assert (ok.execution.attempts, ok.execution.duration) == (1, 1.5)
    assert (bad.execution.status, bad.execution.error) == (
        ExecutionStatus.FAILED,
        error,
    )
    assert (bad.execution.attempts, bad.execution.duration) == (2, 3.5)
    assert (list(led.completed), list(led.failed)) == ([ok], [bad])


def test_cancel_settles_what_has_not_finished_and_nothing_else() -> None:
    led = ledger()
    pending, running, done = Job(), Job(), Job()
    for event in (pending, running, done):
        led.claim(event)
    running.execution.status = ExecutionStatus.PROCESSING
    led.complete(done, "ok")
    for event in (pending, running, done, pending):
        led.cancel(event)
    assert pending.execution.status is ExecutionStatus.CANCELLED
    assert running.execution.status is ExecutionStatus.CANCELLED
    assert done.execution.status is ExecutionStatus.COMPLETED
    assert list(led.cancelled) == [pending, running]
    assert led.counts() == {"completed": 1, "failed": 0, "cancelled": 2}


def test_cancel_leftovers_cancels_the_pending_events_and_those_given() -> None:
    led = ledger()
    pending, unprocessed, done = Job(), Job(), Job()
    for event in (pending, unprocessed, done):
        led.claim(event)
    led.pending.append(pending)
    led.complete(done, "ok")
    led.cancel_leftovers([unprocessed, done])
    assert not led.pending
    assert list(led.cancelled) == [pending, unprocessed]
    assert done.execution.status is ExecutionStatus.COMPLETED


def test_history_keeps_the_newest_and_the_counts_all() -> None:
    led = ledger(history=2)
    events = [Job() for _ in range(5)]
    for event in events:
        led.claim(event)
        led.complete(event, "ok")
    assert list(led.completed) == events[-2:]
    assert led.counts()["completed"] == 5


def test_each_settled_event_goes_to_its_sink_once() -> None:
    led = ledger()
    ok, bad, cancelled, unwatched = Job(), Job(), Job(), Job()
    seen: list[Outcome[Job, object]] = []
    for event in (ok, bad, cancelled, unwatched):
        led.claim(event)
    for event in (ok, bad, cancelled):
        led.deliver_to(event, outcomes_into(seen))
    error = ValueError("no")
    led.complete(ok, "ok")
    led.fail(bad, error)
    led.cancel(cancelled)
    led.complete(unwatched, "ok")
    led.cancel(cancelled)  # settled already: no second delivery
    assert [(o.item, o.value, o.error) for o in seen] == [
        (ok, "ok", None),
        (bad, None, error),
        (cancelled, None, None),
    ]


def test_drawing_counts_an_event_as_pending_while_it_is_put() -> None:
    led = ledger()
    appended, drawn = Job(), Job()
    led.pending.append(appended)
    with led.drawing(drawn):
        assert led.pending_events() == [drawn, appended]
        assert led.pending_count == 2
    assert led.pending_events() == [appended]


async def test_start_marks_the_attempt_and_returns_the_call() -> None:
    led = ledger()
    event = Job()
    led.claim(event)
    call = led.start(event)
    assert event.execution.status is ExecutionStatus.PROCESSING
    assert event.execution.attempts == 1
    assert await call == "done"
