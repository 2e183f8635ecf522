"""Realtime sessions flooded faster than real time (issue 20.3): the server's memory during and
after, on this tree and on a baseline commit's server.

    .venv/bin/python -m bench.realtime_flood            # full run (about 8 minutes)
    .venv/bin/python -m bench.realtime_flood --smoke    # seconds: checks that it runs

Each of ``--sessions`` clients (manual turns: the server cuts one every --max-turn-seconds)
sends speech at ``--speed`` times real time for ``--seconds`` of wall time, in 100 ms appends
(a send blocks when TCP pushes back), while a reader takes every event; a session the server
closes is opened again at once, as a client that retries would. The server's RSS (the process
and its workers) is sampled every second: before, at its peak, and once the sessions have
ended (``after``: the sessions gauge back at 0, at most 60 s after the clients closed). The
baseline is taken after a 3-minute file was transcribed and every client flooded for 20 s: the
engine's memory arena (kept, as for any request) has grown to full batches and to turns'
decodes by then.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import soxr
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.common import (
    add_artifact_options,
    artifact_label,
    base_parser,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
    read_audio,
    read_testset,
    require_artifact,
    wav_bytes,
)
from bench.server import ServerProcess, extract_tree

SECTION = "realtime-flood"
BASELINE = "43b349c~1"  # the edge before the session backlog bound and the bounded inbox
APPEND_S = 0.1


@dataclass
class Flow:
    sent_s: float = 0.0
    completed: int = 0
    sessions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)  # by the server's close code


@dataclass
class Run:
    label: str
    before_mib: float = 0.0
    peak_mib: float = 0.0
    after_mib: float = 0.0
    after_s: float = 0.0  # from the clients' close to the sessions' end
    flows: list[Flow] = field(default_factory=list)


def _rss_mib(pid: int) -> float:
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    for each in pids:
        status = Path(f"/proc/{each}/status").read_text()
        total += int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
    return total / 1024


def _speech(seconds: float) -> bytes:
    clips = [read_audio(u.audio) for u in read_testset()[:20]]
    audio = np.concatenate(clips)
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    return (np.clip(soxr.resample(audio, 16000, 24000), -1, 1) * 32767).astype("<i2").tobytes()


def _flood(url: str, audio: bytes, speed: float, seconds: float, flow: Flow) -> None:
    """Send at ``speed`` × real time for ``seconds``; a session the server closes is opened
    again at once (as a client that retries would)."""
    started = time.monotonic()
    offset = 0
    while time.monotonic() - started < seconds:
        offset = _session(url, audio, speed, started, seconds, flow, offset)
        flow.sessions += 1


def _session(
    url: str, audio: bytes, speed: float, started: float, seconds: float, flow: Flow, offset: int
) -> int:
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    step = int(48000 * APPEND_S)
    with connect(ws_url, max_size=None, open_timeout=30) as ws:
        ws.recv(timeout=30)
        update = {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
        }
        ws.send(json.dumps(update))

        def read() -> None:
            try:
                while True:
                    event = json.loads(ws.recv())
                    if event["type"].endswith("transcription.completed"):
                        flow.completed += 1
                    elif event["type"] == "error":
                        code = event["error"]["code"]
                        flow.errors[code] = flow.errors.get(code, 0) + 1
            except ConnectionClosed as exc:
                flow.closes[str(exc.rcvd.code if exc.rcvd else "none")] = (
                    flow.closes.get(str(exc.rcvd.code if exc.rcvd else "none"), 0) + 1
                )

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while time.monotonic() - started < seconds:
                chunk = base64.b64encode(audio[offset : offset + step]).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                offset = (offset + step) % (len(audio) - step)
                flow.sent_s += APPEND_S
                ahead = started + flow.sent_s / speed - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except ConnectionClosed:
            pass  # the server closed it
    reader.join(10)
    return offset


def _sessions_open(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    line = next(
        ln for ln in text.splitlines() if ln.startswith("kubescribe_realtime_sessions_active")
    )
    return float(line.split()[1])


def _start(
    url: str, audio: bytes, args: argparse.Namespace, flows: list[Flow], seconds: float
) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_flood, args=(url, audio, args.speed, seconds, flow))
        for flow in flows
    ]
    for thread in threads:
        thread.start()
    return threads


def measure(
    label: str, tree: Path, artifact: Path, args: argparse.Namespace, extra: Sequence[str]
) -> Run:
    run = Run(label)
    audio = _speech(180.0)
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
        artifact, args.threads, 16, 10.0, Path(tmp) / "server.log",
        ("--max-sessions", str(args.sessions), *extra), tree=tree,
    ) as server:  # fmt: skip
        assert server.process is not None
        pid = server.process.pid
        # Warm-up: a 3-minute file fills full batches of windows, so the engine's memory
        # arena has grown to its largest before the baseline is taken.
        clip = wav_bytes(np.frombuffer(audio[: 48000 * 180], "<i2").astype(np.float32) / 32768.0)
        requests.post(
            server.url + "/v1/audio/transcriptions", files={"file": ("w.wav", clip)}, timeout=600
        )
        # ... and a short flood of every session: the decodes of turns have run too.
        warm = _start(server.url, audio, args, [Flow() for _ in range(args.sessions)], 20.0)
        for thread in warm:
            thread.join()
        while _sessions_open(server.url) > 0:
            time.sleep(0.5)
        run.before_mib = _rss_mib(pid)
        run.flows = [Flow() for _ in range(args.sessions)]
        threads = _start(server.url, audio, args, run.flows, args.seconds)
        while any(t.is_alive() for t in threads):
            run.peak_mib = max(run.peak_mib, _rss_mib(pid))
            time.sleep(1.0)
        closed = time.monotonic()
        while _sessions_open(server.url) > 0 and time.monotonic() - closed < 60:
            run.peak_mib = max(run.peak_mib, _rss_mib(pid))
            time.sleep(1.0)
        run.after_s = time.monotonic() - closed
        run.after_mib = _rss_mib(pid)
    progress(f"{label}: {run}")
    return run


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__ or "")
    add_artifact_options(parser)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--speed", type=float, default=75.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--backlog", type=float, default=60.0)
    parser.add_argument("--baseline", default=BASELINE, help="commit of the server to compare")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions, args.seconds = 1, 5.0
    artifact = require_artifact(args.artifact)
    runs = [
        measure(
            "this tree", Path(__file__).resolve().parents[1], artifact, args,
            ("--session-max-backlog-seconds", str(args.backlog)),
        ),
    ]  # fmt: skip
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = extract_tree(args.baseline, Path(tmp) / "tree")
            runs.append(measure(f"server of {args.baseline}", tree, artifact, args, ()))
    rows = []
    for r in runs:
        sent = sum(f.sent_s for f in r.flows)
        errors = sum(sum(f.errors.values()) for f in r.flows)
        closes: dict[str, int] = {}
        for f in r.flows:
            for code, n in f.closes.items():
                closes[code] = closes.get(code, 0) + n
        rows.append(
            [
                r.label,
                fmt(sent / args.seconds / len(r.flows), 1) + "×",
                sum(f.sessions for f in r.flows),
                ", ".join(f"{n}× {code}" for code, n in sorted(closes.items())) or "—",
                sum(f.completed for f in r.flows),
                errors,
                fmt(r.before_mib, 0),
                fmt(r.peak_mib, 0),
                fmt(r.after_mib, 0),
                fmt(r.after_s, 0),
            ]
        )
    table = markdown_table(
        [
            "server",
            "audio taken per client (× real time)",
            "sessions",
            "closes (code)",
            "turns completed",
            "error events",
            "RSS before (MiB)",
            "peak",
            "after the sessions ended",
            "sessions ended (s after close)",
        ],
        rows,
    )
    body = "\n".join(
        [
            f"{args.sessions} realtime sessions each send speech at {args.speed:g}× real time "
            f"for {args.seconds:g} s (manual turns, cut at --max-turn-seconds), "
            f"--session-max-backlog-seconds {args.backlog:g} on this tree, model "
            f"{artifact_label(artifact)}. `python -m bench.realtime_flood`.",
            "",
            table,
            "",
            *machine_facts(args.threads),
        ]
    )
    finish(args, SECTION, "Realtime sessions flooded faster than real time", body)
    return 0


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
