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


class WaitTimeout(AssertionError):
    pass


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
        timeout: float = 30,
        what: str = "condition",
        interval: float = 0.05,
    ) -> T:
        """Poll ``predicate(emulator)`` on the API's loop until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = self.call(lambda: predicate(self.emulator))
            if last:
                return last
            time.sleep(interval)
        raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: local\n"
            f"clusters:\n- name: local\n  cluster:\n    server: {self.url}\n"
            "contexts:\n- name: local\n  context:\n    cluster: local\n    user: local\n"
            "users:\n- name: local\n  user:\n    token: test-token\n"
        )
        return path
