"""`kubescribe operator`: the operator process (kopf), its liveness probe, metrics and logs.

    kubescribe operator [--namespace NS ... | --all-namespaces] [--liveness-port 8080]
                        [--metrics-port 9090] [--log-format json|text] [--peering NAME]
                        [--standalone] [--priority N] [--resync-seconds S]

- Scope: ``--all-namespaces`` (the default) watches SpeechModels cluster-wide, ``--namespace``
  (repeatable; kopf globs allowed) only there.
- Liveness: kopf's probe at ``http://0.0.0.0:<liveness-port>/healthz``. kopf runs in a thread;
  the main thread exits the process when the API server or that probe has not answered for
  ``--api-outage-exit-seconds`` (kopf does not come back reliably from long outages: a zombie
  would serve ``/metrics`` and reconcile nothing), and within 10 s of SIGTERM (``watchdog.py``).
- Metrics: Prometheus text at ``http://0.0.0.0:<metrics-port>/metrics`` (see ``metrics.py``).
- Logs: one JSON object per line with ``--log-format json`` (kopf's JSON formatter, with the
  object reference under ``k8s``).
- Two replicas never both act: kopf peering. Replicas of the same peering (``--peering``,
  default ``kubescribe``) see each other; all but the highest ``--priority`` pause.

Note for packaging (chart): peering needs kopf's peering CRDs installed
(``clusterkopfpeerings.kopf.dev`` for ``--all-namespaces``, ``kopfpeerings.kopf.dev`` for
``--namespace``) and the peering object named as ``--peering`` created (cluster-scoped, or one
per watched namespace). Replicas with equal ``--priority`` all pause, so leave the default (the
process's start time in milliseconds: the newest replica acts, so a replica that replaces a
crashed one never waits for the dead one's entry to expire; a replica started before a dead one
would wait up to ``--peering-lifetime``). The CRD must keep ``status.kopf`` (kopf's bookkeeping:
``x-kubernetes-preserve-unknown-fields``); kopf also puts a finalizer on each SpeechModel (its
per-object resync timer needs one) and removes it on deletion. RBAC: see ``apply.py``'s table.
Reads come from kopf's in-memory indexes (``cache.py``), filled by one watch per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from kubescribe.errors import KubescribeError
from kubescribe_operator import apply, crd_release, handlers, overlap, reconciler, watchdog
from kubescribe_operator.kube import Kube

DEFAULT_PEERING = "kubescribe"
log = logging.getLogger(__name__)


class OperatorError(KubescribeError):
    """The operator cannot start (bad flags, no cluster credentials)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubescribe operator",
        description="Run the SpeechModel operator: reconcile SpeechModels into Deployments, "
        "Services and HPAs and roll model versions out and back.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch SpeechModels only in this namespace (repeatable; globs like team-* allowed)",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch SpeechModels in every namespace (the default)",
    )
    parser.add_argument(
        "--liveness-port",
        type=_port,
        default=int(os.environ.get("KUBESCRIBE_OPERATOR_LIVENESS_PORT", 8080)),
        help="port of the liveness endpoint /healthz (default 8080; 0 disables it)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=int(os.environ.get("KUBESCRIBE_OPERATOR_METRICS_PORT", 9090)),
        help="port of the Prometheus endpoint /metrics (default 9090; 0 disables it)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("KUBESCRIBE_OPERATOR_LOG_FORMAT", "text"),
        help="log lines as text or one JSON object per line (default text)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        metavar="NAME",
        help=f"kopf peering object shared by the replicas (default {DEFAULT_PEERING})",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: act even if other replicas run (a single replica only)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: of the live replicas, only the highest one acts (default: the "
        "start time in milliseconds, so the newest acts and a replacement never waits for a "
        "crashed replica's entry to expire; equal priorities all pause)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a replica that stopped renewing its peering entry this long ago counts as gone "
        "(default 60)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=_positive,
        default=30.0,
        help="re-observe every SpeechModel this often (default 30)",
    )
    parser.add_argument(
        "--api-outage-exit-seconds",
        type=_positive,
        default=float(os.environ.get("KUBESCRIBE_OPERATOR_API_OUTAGE_EXIT_SECONDS", 60)),
        metavar="SECONDS",
        help="exit (for the Deployment to restart the operator with fresh watches) when the API "
        "server or the operator's own liveness endpoint has not answered this long (default 60)",
    )
    parser.add_argument(
        "--retry-backoff-seconds",
        type=_positive,
        default=10.0,
        help="wait this long before retrying after an API error (default 10)",
    )
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _api_client() -> Any:
    """A client from the in-cluster service account, else from the kubeconfig."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise OperatorError(
                f"no Kubernetes credentials (in-cluster or kubeconfig): {exc}"
            ) from exc
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = reconciler.RECONCILE_THREADS  # one connection per thread
    return kubernetes.client.ApiClient(configuration=config)


def default_priority() -> int:
    """The process's start time in milliseconds: the newest replica wins, so one that replaces
    a crashed replica acts at once instead of waiting out the dead one's peering entry (up to
    --peering-lifetime) whenever a random priority had ranked the dead one higher."""
    return time.time_ns() // 1_000_000


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    priority = args.priority if args.priority is not None else default_priority()

    import kopf
    from prometheus_client import start_http_server

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="k8s" if args.log_format == "json" else None,
    )
    options = reconciler.Options(
        resync_seconds=args.resync_seconds, retry_backoff_seconds=args.retry_backoff_seconds
    )
    ctx = reconciler.Context(
        kube=Kube(_api_client(), status_manager=overlap.status_manager(args.peering)),
        release=args.peering,
        options=options,
        memory=apply.Memory(base_backoff=args.retry_backoff_seconds),
    )
    registry = kopf.OperatorRegistry()
    handlers.register(registry, ctx)
    metrics_servers: list[Any] = []
    # Its CRD deleted while it runs: kopf stops serving SpeechModels, this releases them.
    crd_release.register(registry, ctx.kube.api, args.namespace or None)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the operator's own client (in-cluster, else kubeconfig).
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        handlers.settings_for(settings)
        settings.peering.priority = priority
        settings.peering.lifetime = args.peering_lifetime
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # /metrics comes up with kopf (and its liveness endpoint), not before: both answer or
        # neither does (the process exits when kopf cannot work), so KubescribeOperatorAbsent
        # and the liveness probe agree.
        if args.metrics_port:
            metrics_servers.append(start_http_server(args.metrics_port)[0])
            log.info("metrics on :%d/metrics", args.metrics_port)

    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    stop = threading.Event()

    def stopping() -> None:  # /metrics goes as soon as the process stops working
        for server in metrics_servers:
            server.shutdown()
            server.server_close()

    def run_kopf() -> None:
        kopf.run(
            loop=asyncio.new_event_loop(),
            registry=registry,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=liveness,
            standalone=args.standalone,
            peering_name=None if args.standalone else args.peering,
            priority=priority,
            stop_flag=stop,
        )

    alive = _answers(f"http://127.0.0.1:{args.liveness_port}/healthz") if liveness else None
    dog = watchdog.Watchdog(ctx.kube.ready, alive, outage_limit=args.api_outage_exit_seconds)
    code = _supervise(run_kopf, stop, dog, stopping)
    # Not a normal interpreter exit: it joins every worker thread, and one still blocked in a
    # request (or on kopf's stop flag) would keep a process that does nothing alive.
    _exit_now(code)
    return code


# Longest wait for kopf to stop after a stop was asked for; then the process exits anyway.
STOP_GRACE_SECONDS = 10.0
WATCH_INTERVAL_SECONDS = 2.0


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return 200 <= int(response.status) <= 299
        except OSError:  # refused, reset, timed out, an HTTP error status
            return False

    return check


def _supervise(
    run: Callable[[], None],
    stop: threading.Event,
    dog: watchdog.Watchdog,
    on_stop: Callable[[], None] = lambda: None,
) -> int:
    """Run kopf (``run``) in a thread; exit on a signal, a failed kopf or the watchdog's word,
    within STOP_GRACE_SECONDS of the stop whatever kopf does. ``on_stop`` runs once, when the
    stop starts (or kopf ended by itself)."""
    failed: list[BaseException] = []
    stopping: list[tuple[float, int]] = []  # (deadline, exit code) once a stop was asked for

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            failed.append(exc)

    def request_stop(why: str, code: int) -> None:
        if not stopping:
            log.warning("stopping: %s", why)
            stopping.append((time.monotonic() + STOP_GRACE_SECONDS, code))
            stop.set()
            on_stop()

    previous = {
        signum: signal.signal(signum, lambda n, _f: request_stop(signal.Signals(n).name, 0))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    thread = threading.Thread(target=target, name="kopf", daemon=True)
    thread.start()
    try:
        _watch(thread, stopping, dog, request_stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not stopping:
        stop.set()  # kopf ended by itself: release what waits on its stop flag
        on_stop()
    if failed:
        log.error("the operator failed: %r", failed[0])
        return 1
    if not stopping:
        log.error("kopf stopped on its own: exiting for a restart")
        return 1
    return stopping[0][1]


def _watch(
    thread: threading.Thread,
    stopping: list[tuple[float, int]],
    dog: watchdog.Watchdog,
    request_stop: Callable[[str, int], None],
) -> None:
    while thread.is_alive():
        thread.join(WATCH_INTERVAL_SECONDS if not stopping else 0.5)
        if stopping:
            deadline, code = stopping[0]
            if thread.is_alive() and time.monotonic() > deadline:
                log.error("kopf did not stop within %.0f s: exiting anyway", STOP_GRACE_SECONDS)
                _exit_now(code)
            continue
        reason = dog.check() if thread.is_alive() else None
        if reason is not None:
            request_stop(reason, 1)


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
