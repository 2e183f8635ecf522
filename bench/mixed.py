"""Live audio first under mixed load (issue 20.4): Realtime sessions, long files and short clips
on one server at once.

    .venv/bin/python -m bench.load --mixed            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.load --mixed --smoke    # seconds: checks that it runs
    .venv/bin/python -m bench.load --mixed --baseline-ref REF  # and the runtime of commit REF

One `kubescribe serve` (``--threads 2``: two cores) per setting of ``--live-batch-seconds``
(``0``: the live-first policy off — no batch bound, no CPU reserve — as the server before
issue 20.4), and with ``--baseline-ref`` the runtime of an earlier commit (extracted with
``git archive``, as in ``bench.server``) at the default setting, run right before this tree's
row so that the two see about the same load from the machine. In each: ``sessions`` Realtime
sessions send calls (test-set sentences with pauses) at real-time pace, ``files`` clients post
a ``file_s`` speech file back to back, and one client starts a 2 s speech clip every 0.5 s
(each in its own thread: a slow answer does not delay the next clip). Measured: partial latency
(from a word's spoken end to the delta carrying it, as in ``bench.streaming``), clip latency,
and the files' progress (completed, and audio seconds of files decoded per second). Where the
time goes: the server's own histograms by priority class (``kubescribe_queue_wait_seconds``,
``kubescribe_batch_inference_seconds``), mean and p95 (bucket bound) per class; a clip's
latency less its queue wait and batch is its HTTP, decoding, VAD and features.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    REPO,
    Clip,
    artifact_label,
    build_clips,
    finish,
    fmt,
    machine_facts,
    markdown_table,
    percentile,
    progress,
    read_testset,
    require_artifact,
    wav_bytes,
)
from bench.server import ServerProcess, extract_tree
from bench.streaming import (
    build_streams,
    match_latencies,
    offline_words,
    run_stream,
    server_metric,
)

SECTION = "load-mixed"
PARTIAL_TARGET_S = 1.5
CLIP_TARGET_S = 0.5


@dataclass(frozen=True)
class Settings:
    sessions: int
    sentences_per_session: int
    files: int
    file_s: float
    clip_every_s: float
    budgets: tuple[float, ...]  # --live-batch-seconds, one server each


FULL = Settings(4, 10, 4, 180.0, 0.5, (0.0, 12.0))
SMOKE = Settings(1, 1, 1, 30.0, 1.0, (0.0, 12.0))
DEFAULT_BUDGET = 12.0  # the runtime's --live-batch-seconds
CLASSES = ("live", "short", "file")
HISTOGRAMS = {
    "queue wait": "kubescribe_queue_wait_seconds",
    "batch": "kubescribe_batch_inference_seconds",
}


@dataclass
class Histogram:
    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le → cumulative count

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def p95(self) -> float | None:
        """The upper bound of the bucket holding the 95th percentile."""
        for bound, cumulative in sorted(self.buckets.items()):
            if self.count and cumulative >= 0.95 * self.count:
                return bound
        return None

    def minus(self, before: Histogram) -> Histogram:
        return Histogram(
            self.count - before.count,
            self.total - before.total,
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )


def histograms(url: str) -> dict[tuple[str, str], Histogram]:
    """(what, class) → the server's histogram of it so far (empty for a server without the
    priority label)."""
    result: dict[tuple[str, str], Histogram] = {}
    text = requests.get(url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        what = next((k for k, v in HISTOGRAMS.items() if v == family.name), None)
        if what is None:
            continue
        for sample in family.samples:
            klass = sample.labels.get("priority")
            if klass is None:
                continue
            h = result.setdefault((what, klass), Histogram())
            if sample.name.endswith("_count"):
                h.count = sample.value
            elif sample.name.endswith("_sum"):
                h.total = sample.value
            elif sample.name.endswith("_bucket"):
                h.buckets[float(sample.labels["le"])] = sample.value
    return result


@dataclass
class Result:
    budget: float
    label: str = ""
    partial: list[float] = field(default_factory=list)
    clips: list[float] = field(default_factory=list)
    clip_failed: int = 0
    files_done: int = 0
    file_failed: int = 0
    file_audio_s: float = 0.0  # of completed files
    elapsed: float = 0.0
    decoded_s: float = 0.0  # audio the server decoded during the mix (every kind)
    live_s: float = 0.0  # of it, the sessions' and the clips' audio at most
    sessions_complete: int = 0
    load: str = ""
    load_before: str = ""
    where: dict[tuple[str, str], Histogram] = field(default_factory=dict)


def post(url: str, wav: bytes, timeout: float) -> bool:
    try:
        answer = requests.post(
            url + "/v1/audio/transcriptions",
            files={"file": ("a.wav", wav, "audio/wav")},
            data={"model": "default"},
            timeout=timeout,
        )
    except requests.RequestException:
        return False
    return answer.status_code == 200


def run_mixed(
    url: str, s: Settings, utterances: Sequence[object], file_wav: bytes, clip_wav: bytes
) -> Result:
    result = Result(0.0)
    lock = threading.Lock()
    streams = build_streams(utterances, s.sessions, s.sentences_per_session)  # type: ignore[arg-type]
    for stream in streams:  # the reference word ends, unloaded
        _, stream.offline_words = offline_words(url, stream.audio)
    done = threading.Event()

    def file_client() -> None:
        while not done.is_set():
            ok = post(url, file_wav, 1200)
            with lock:
                if ok and not done.is_set():
                    result.files_done += 1
                    result.file_audio_s += s.file_s
                elif not ok:
                    result.file_failed += 1

    def one_clip() -> None:
        started = time.perf_counter()
        ok = post(url, clip_wav, 60)
        with lock:
            if ok:
                result.clips.append(time.perf_counter() - started)
            else:
                result.clip_failed += 1

    def clip_client() -> None:
        threads = []
        while not done.wait(s.clip_every_s):
            thread = threading.Thread(target=one_clip, daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()

    decoded_before = server_metric(url, "kubescribe_audio_processed_seconds_total")
    where_before = histograms(url)
    result.load_before = _load()
    started = time.perf_counter()
    background = [threading.Thread(target=file_client, daemon=True) for _ in range(s.files)]
    for thread in background:
        thread.start()
    time.sleep(2.0)  # the files are being decoded when the live traffic starts
    clips = threading.Thread(target=clip_client, daemon=True)
    clips.start()
    sessions = [
        threading.Thread(target=run_stream, args=(url, stream, 120.0), daemon=True)
        for stream in streams
    ]
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join()
    done.set()
    result.elapsed = time.perf_counter() - started
    result.decoded_s = server_metric(url, "kubescribe_audio_processed_seconds_total")
    result.decoded_s -= decoded_before
    result.where = {
        k: h.minus(where_before.get(k, Histogram())) for k, h in histograms(url).items()
    }
    result.load = _load()
    clips.join()
    result.live_s = sum(st.seconds for st in streams) + 2.0 * (
        len(result.clips) + result.clip_failed
    )
    result.partial = [
        latency for st in streams for latency in match_latencies(st.deltas, st.offline_words)
    ]
    result.sessions_complete = sum(st.complete for st in streams)
    return result  # the file clients still running are abandoned with the server


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def speech_file(clip: Clip, seconds: float) -> bytes:
    repeats = int(seconds / clip.seconds) + 1
    return wav_bytes(np.tile(clip.samples, repeats)[: int(seconds * 16000)])


def run(args: argparse.Namespace) -> int:
    s = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact).resolve()
    utterances = read_testset()
    (clip,) = build_clips(utterances, 1, 2.0)
    (long_clip,) = build_clips(utterances, 1, 30.0)
    file_wav, clip_wav = speech_file(long_clip, s.file_s), wav_bytes(clip.samples)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        rows: list[tuple[float, Path, str]] = [(b, REPO, f"{b:g}") for b in s.budgets]
        if args.baseline_ref:
            baseline = extract_tree(args.baseline_ref, Path(tmp) / "baseline")
            at = next(i for i, row in enumerate(rows) if row[0] == DEFAULT_BUDGET)
            rows.insert(
                at, (DEFAULT_BUDGET, baseline, f"{DEFAULT_BUDGET:g}, `{args.baseline_ref}`")
            )
        for budget, tree, label in rows:
            flags = ("--live-batch-seconds", f"{budget:g}", "--http-threads", "64")
            log = Path(tmp) / f"mixed-{len(results)}.log"
            with ServerProcess(artifact, 2, 16, 10, log, flags, tree) as srv:
                post(srv.url, clip_wav, 60)  # warm-up
                result = run_mixed(srv.url, s, utterances, file_wav, clip_wav)
            result.budget, result.label = budget, label
            results.append(result)
            progress(
                f"{label}: partial p95 {_p(result.partial, 95)} s (target {PARTIAL_TARGET_S}), "
                f"clip p95 {_p(result.clips, 95)} s (target {CLIP_TARGET_S}), "
                f"files done {result.files_done}, load {result.load}"
            )
            for klass in CLASSES:
                parts = [f"{what} {_h(result.where.get((what, klass)))}" for what in HISTOGRAMS]
                progress(f"    {klass}: " + ", ".join(parts))
    finish(
        args,
        SECTION,
        "Runtime under mixed load (`python -m bench.load --mixed`)",
        render(args, s, results),
    )
    return 0


def _p(values: list[float], q: float) -> str:
    return fmt(percentile(values, q), 2) if values else "—"


def _h(h: Histogram | None) -> str:
    """``mean / p95 s (count)`` of a histogram."""
    if h is None or not h.count:
        return "—"
    mean, p95 = h.mean(), h.p95()
    return f"{fmt(mean or 0.0, 3)} / ≤ {p95:g} s ({h.count:.0f})"


def render(args: argparse.Namespace, s: Settings, results: list[Result]) -> str:
    rows = []
    for r in results:
        partial_ok = bool(r.partial) and percentile(r.partial, 95) <= PARTIAL_TARGET_S
        clip_ok = bool(r.clips) and percentile(r.clips, 95) <= CLIP_TARGET_S
        rows.append(
            [
                r.label if r.budget else "0 (live-first off: before issue 20.4)",
                f"{_p(r.partial, 50)} / {_p(r.partial, 95)}",
                "met" if partial_ok else "**missed**",
                f"{_p(r.clips, 50)} / {_p(r.clips, 95)} ({r.clip_failed} failed)",
                "met" if clip_ok else "**missed**",
                f"{r.files_done} ({r.file_failed} failed)",
                fmt(r.file_audio_s / r.elapsed) if r.elapsed else "—",
                fmt(max(0.0, r.decoded_s - r.live_s) / r.elapsed) if r.elapsed else "—",
                f"{r.sessions_complete} of {s.sessions}",
                f"{r.load_before} → {r.load}",
            ]
        )
    where = [
        [
            r.label if r.budget else "0",
            klass,
            *[_h(r.where.get((what, klass))) for what in HISTOGRAMS],
        ]
        for r in results
        for klass in CLASSES
        if any((h := r.where.get((what, klass))) and h.count for what in HISTOGRAMS)
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    return "\n\n".join(
        [
            f"Run: {mode}; artifact {artifact_label(args.artifact)}; one `kubescribe serve` "
            f"per row (`--threads 2 --max-batch-size 16 --http-threads 64`). At once: "
            f"{s.sessions} Realtime sessions sending calls of {s.sentences_per_session} "
            f"test-set sentences at real-time pace (server VAD), {s.files} clients posting "
            f"{s.file_s:g} s speech files back to back, one 2 s speech clip started every "
            f"{s.clip_every_s:g} s. Targets: partial p95 ≤ {PARTIAL_TARGET_S} s, clip p95 ≤ "
            f"{CLIP_TARGET_S} s, files still progressing.",
            "\n".join(machine_facts(2, ("onnxruntime", "gunicorn", "requests"))),
            markdown_table(
                [
                    "--live-batch-seconds",
                    "partial p50 / p95 s",
                    f"partial p95 ≤ {PARTIAL_TARGET_S} s",
                    "clip p50 / p95 s",
                    f"clip p95 ≤ {CLIP_TARGET_S} s",
                    "files completed",
                    "completed file audio s/s",
                    "file audio decoded s/s (server's count less live audio)",
                    "sessions complete",
                    "load average (1, 5, 15 min) at the mix's start → end",
                ],
                rows,
            ),
            "Where the time goes (the server's histograms over the mix, by priority class: "
            "live = Realtime sessions, short = requests of one window, file = longer ones; a "
            "batch's class is its head's; mean / p95 bucket bound (count); a baseline without "
            "the classes has no rows):",
            markdown_table(["row", "class", "queue wait", "batch run"], where)
            if where
            else "(no server with the classes)",
        ]
    )
