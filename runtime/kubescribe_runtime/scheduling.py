"""Which queued windows form the next batch: fair across requests, live sessions first, similar
lengths together. Pure (no threads, no clock of its own), so the order is testable exactly.

Fairness is self-clocked fair queueing on audio length (the deficit-round-robin family, exact
instead of quantised): every window gets a virtual finish tag, ``max(V, flow's last tag) +
length``, where ``V`` is the tag of the window that headed the last batch; windows go in tag
order. A request with many windows queued (a long file) therefore takes its turn *beside* one
that arrives later (a short clip), instead of ahead of it: the clip's first window is tagged
``V + its length``, the file's next ones ``V + 20 s``, ``V + 40 s``… A flow that was idle
restarts at ``V`` (no credit for idleness).

Priority classes (:class:`Priority`): windows of live flows (real-time sessions) go first,
then those of short requests (a clip of at most one window), then long files'; fairness holds
within a class. Live and short work is bounded (sessions by ``--max-sessions``, a short
request's audio by its single window), so files still progress.

Live budget: while a live flow is open (a session, even between its windows), a batch holds at
most ``live_budget`` length units of audio, padding included (its head always fits). A running
batch cannot be interrupted, so a live window that arrives meanwhile waits for it: small
batches bound that wait, at the cost of some throughput for files while sessions are open.

Bucketing: the head (the live or lowest-tag window) decides the batch's length; the next
windows in order join only while the batch stays *similar*: ``longest ≤ shortest × ratio +
slack`` (a 2 s window is never padded to 20 s). Windows that do not fit keep their place for
a later batch; nothing waits behind them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_LENGTH_RATIO = 1.25


class Priority(IntEnum):
    """A flow's class: lower goes first."""

    LIVE = 0  # a real-time session's windows (partials and finals)
    SHORT = 1  # a request whose audio fits one window (a clip)
    FILE = 2  # a longer request

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(eq=False)
class FlowState:
    """One request's (or session's) place in the schedule."""

    priority: Priority = Priority.FILE
    finish_tag: float = 0.0

    @property
    def live(self) -> bool:
        return self.priority is Priority.LIVE


@dataclass(eq=False)
class Entry(Generic[T]):
    item: T
    length: int
    flow: FlowState
    tag: float
    seq: int
    enqueued: float

    def key(self) -> tuple[int, float, int]:
        return (self.flow.priority, self.tag, self.seq)


@dataclass
class Scheduler(Generic[T]):
    """The queue of windows and the virtual clock; :meth:`take` removes the next batch."""

    max_batch_size: int
    length_ratio: float = DEFAULT_LENGTH_RATIO
    length_slack: int = 0
    live_budget: int = 0  # units per batch while live flows are open (0: no bound)
    live_flows: int = 0  # open live flows, queued windows or not (kept by the batcher)
    virtual_time: float = 0.0
    _entries: list[Entry[T]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, item: T, length: int, flow: FlowState, now: float) -> Entry[T]:
        start = max(self.virtual_time, flow.finish_tag)
        flow.finish_tag = start + length
        entry = Entry(item, length, flow, flow.finish_tag, next(self._seq), now)
        self._entries.append(entry)
        return entry

    def discard(self, flow: FlowState) -> list[T]:
        """Remove every queued window of ``flow`` (a cancelled request); returns their items."""
        dropped = [e.item for e in self._entries if e.flow is flow]
        self._entries = [e for e in self._entries if e.flow is not flow]
        return dropped

    def urgent_queued(self) -> bool:
        """Live or short windows are queued."""
        return any(e.flow.priority < Priority.FILE for e in self._entries)

    def oldest_enqueued(self) -> float | None:
        return min((e.enqueued for e in self._entries), default=None)

    def similar(self, shortest: int, longest: int) -> bool:
        return longest <= shortest * self.length_ratio + self.length_slack

    def take(self, urgent_only: bool = False) -> list[Entry[T]]:
        """The next batch, in schedule order (head first); removed from the queue.
        ``urgent_only``: of live and short windows alone (the batcher's urgent lane), within
        ``live_budget`` whether a session is open or not: a batch beside a running one stays
        small (the model's memory holds one full batch, not two)."""
        eligible = [e for e in self._entries if not urgent_only or e.flow.priority < Priority.FILE]
        if not eligible:
            return []
        ordered = sorted(eligible, key=Entry.key)
        head = ordered[0]
        batch = [head]
        shortest = longest = head.length
        bounded = self.live_flows or urgent_only
        budget = self.live_budget if bounded and self.live_budget else None
        for entry in ordered[1:]:
            if len(batch) >= self.max_batch_size:
                break
            low, high = min(shortest, entry.length), max(longest, entry.length)
            # padded to the longest: that is what the batch costs
            if budget is not None and high * (len(batch) + 1) > budget:
                continue
            if self.similar(low, high):
                batch.append(entry)
                shortest, longest = low, high
        chosen = {id(e) for e in batch}
        self._entries = [e for e in self._entries if id(e) not in chosen]
        self.virtual_time = max(self.virtual_time, head.tag)
        return batch


@dataclass(frozen=True)
class Verdict:
    go: bool
    recheck_s: float | None = None  # when to ask again at the latest (None: when woken)


def file_may_prepare(
    preparing: int, slots: int, urgent: bool, waited_s: float, yield_s: float
) -> Verdict:
    """May a file request start preparing its next window (the batcher's CPU reserve)?

    Not while ``slots`` file requests are preparing one (one finishing wakes the waiter); nor
    while urgent (live or short) work is prepared, queued or run — but after ``yield_s`` of
    yielding it goes anyway, so that files progress under any live load."""
    if preparing >= slots:
        return Verdict(False)
    if urgent and waited_s < yield_s:
        return Verdict(False, yield_s - waited_s)
    return Verdict(True)
