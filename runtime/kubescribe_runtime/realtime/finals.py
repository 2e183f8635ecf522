"""Committed turns waiting for their final decode. Decodes finish in any order; their results
go out in commit order (a client reads ``completed`` events as the conversation's order), so a
finished final waits for the ones committed before it. Pure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from kubescribe_runtime.ctc import Word
from kubescribe_runtime.realtime.partials import StablePartials


@dataclass
class Final:
    item_id: str
    seconds: float  # the turn's audio
    partials: StablePartials  # what its deltas already carried
    words: list[Word] | None = None
    failed: str | None = None  # why its decode failed


class Finals:
    def __init__(self) -> None:
        self._queue: deque[Final] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item_id: str, seconds: float, partials: StablePartials) -> None:
        self._queue.append(Final(item_id, seconds, partials))

    def _waiting(self, item_id: str) -> Final | None:
        return next((f for f in self._queue if f.item_id == item_id and f.words is None), None)

    def decoded(self, item_id: str, words: list[Word]) -> None:
        final = self._waiting(item_id)
        if final is not None:
            final.words = words

    def failed(self, item_id: str, message: str) -> None:
        final = self._waiting(item_id)
        if final is not None:
            final.failed, final.words = message, []

    def ready(self) -> Iterator[Final]:
        """The finals whose decode is in, up to the first still waiting, in commit order."""
        while self._queue and self._queue[0].words is not None:
            yield self._queue.popleft()
