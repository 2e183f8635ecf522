"""Run the emulator (and the in-process controllers) on an event loop in a background thread.

The operator under test runs as a separate process; the test body uses the synchronous
``kubernetes`` client and :meth:`KubeThread.call`: neither blocks the loop that serves the API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import kmock

from .emulator import Emulator

T = TypeVar("T")

TEST_USER_AGENT = "kubescribe-tests"
# Waits are event-driven; their timeout only bounds a hang, generously (a loaded 2-core CI).
WAIT_TIMEOUT = 120.0
EVALUATE_EVERY = 0.02
RECHECK_EVERY = 0.5


class WaitTimeout(AssertionError):
    pass


def eventually(check: Callable[[], T], *, timeout: float = WAIT_TIMEOUT, what: str) -> T:
    """Poll ``check()`` in the calling thread until it returns something truthy: for state
    outside the API (the operator's metrics or probes), which no API event announces. The
    timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(RECHECK_EVERY)


class KubeThread:
    """Owns an event loop thread serving an :class:`Emulator` on 127.0.0.1 (random port)."""

    def __init__(self, setup: Callable[[Emulator], None] | None = None) -> None:
        self._setup = setup
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-api", daemon=True)
        self._stack: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.emulator = Emulator()
        self.url = ""

    def __enter__(self) -> KubeThread:
        self._thread.start()
        self.call(self._start)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.call(self._stop, timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _start(self) -> None:
        self.emulator.resources.load_bundled()
        if self._setup is not None:
            self._setup(self.emulator)
        await self.emulator.__aenter__()
        server = kmock.Server(self.emulator)
        await server.__aenter__()
        self._stack.append(server)
        self.url = str(server.url).rstrip("/")

    async def _stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._stack:
            await self._stack.pop().__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def spawn(self, coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run a background coroutine (e.g. a controller) on the API's loop until exit."""

        async def start() -> None:
            task = asyncio.get_running_loop().create_task(coro_fn())
            self._tasks.add(task)

        self.call(start)

    def call(self, fn: Callable[[], Awaitable[T]] | Callable[[], T], timeout: float = 30) -> T:
        """Run ``fn`` on the API's loop (awaiting it if it is async) and return its result."""

        async def run() -> T:
            result = fn()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                return await result  # type: ignore[no-any-return]
            return result  # type: ignore[return-value]

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    def wait_for(
        self,
        predicate: Callable[[Emulator], T],
        *,
        timeout: float = WAIT_TIMEOUT,
        what: str = "condition",
    ) -> T:
        """Evaluate ``predicate(emulator)`` on the API's loop whenever the API's state changes
        or it serves a request (at most every ``EVALUATE_EVERY`` s, and at least every
        ``RECHECK_EVERY`` s for predicates on state outside the API, e.g. the operator's
        metrics) until it returns something truthy.

        ``timeout`` only bounds a hang: it is no statement about how fast anything should be
        (CI runs this beside other suites on a loaded machine)."""

        async def run() -> tuple[bool, T | None]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            last: T | None = None
            while True:
                token = self.emulator.change_token()
                last = predicate(self.emulator)
                if last:
                    return True, last
                left = deadline - loop.time()
                if left <= 0:
                    return False, last
                await asyncio.sleep(EVALUATE_EVERY)
                await self.emulator.changed_since(token, min(RECHECK_EVERY, left))

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        done, last = future.result(timeout + 60)
        if not done:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        return last  # type: ignore[return-value]

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: local\n"
            f"clusters:\n- name: local\n  cluster:\n    server: {self.url}\n"
            "contexts:\n- name: local\n  context:\n    cluster: local\n    user: local\n"
            "users:\n- name: local\n  user:\n    token: test-token\n"
        )
        return path
