"""Realtime transcription sessions: partial latency, cost, capacity and accuracy.

    .venv/bin/python -m bench.streaming            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.streaming --smoke    # seconds: checks that it runs

One real `kubescribe serve` process on loopback. Each stream is a WebSocket Realtime session
(``intent=transcription``, 24 kHz PCM, server VAD) that sends a call — test-set sentences
separated by 1.2 s pauses — in 100 ms appends at real-time pace: the append holding audio up
to *t* leaves at *t*, as from a live microphone. Measured:

- **partial latency**: from the moment a word's end was "spoken" (the call's start + the word's
  end in the offline transcript's word timestamps) to the arrival of the delta carrying it,
  for every delta word matched to an offline word (p50, p95), at 1, 4 and 16 concurrent
  streams (and the levels between, for the capacity);
- **cost**: the server process's CPU seconds per streamed audio second, against the same audio
  transcribed offline (``POST /v1/audio/transcriptions``);
- **capacity**: the most concurrent streams whose partial p95 stays within 1.5 s and whose
  turns all complete;
- **accuracy**: the word error rate of the sessions' final transcripts against the offline
  transcription of the same test-set sentences; the test set offline through 8 kHz G.711
  (μ-law, A-law) beside wideband (telephone audio). The server VAD's turn boundaries, before
  and after Silero VAD, are ``bench.turns``'s.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import soundfile as sf
import soxr

from bench.calls import make_call
from bench.common import (
    SAMPLE_RATE,
    Utterance,
    add_artifact_options,
    artifact_label,
    base_parser,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    percentile,
    progress,
    read_audio,
    read_testset,
    require_artifact,
    wav_bytes,
    word_error_rate,
)
from bench.server import ServerProcess

SECTION = "streaming"
CHUNK_S = 0.1
PAUSE_S = 1.2
TARGET_P95_S = 1.5


@dataclass(frozen=True)
class Settings:
    levels: tuple[int, ...]  # concurrent streams
    sentences_per_stream: int
    utterances: int | None  # test-set size used (None: all)


FULL = Settings(levels=(1, 2, 4, 8, 16, 32, 48), sentences_per_stream=4, utterances=None)
SMOKE = Settings(levels=(1, 2), sentences_per_stream=1, utterances=4)


# ---- pure helpers -------------------------------------------------------------------------


def plan_streams(count: int, streams: int, per_stream: int) -> list[list[int]]:
    """Utterance indices for each of ``streams`` streams, ``per_stream`` each, cycling through
    the ``count`` utterances so that a level with enough streams covers them all."""
    return [[(s * per_stream + k) % count for k in range(per_stream)] for s in range(streams)]


def match_latencies(
    delta_words: Sequence[tuple[str, float]], reference: Sequence[tuple[str, float]]
) -> list[float]:
    """Latency of each delta word (text, arrival) matched, in order, to a reference word
    (text, the moment its end was spoken)."""
    matcher = difflib.SequenceMatcher(
        a=[w for w, _ in delta_words], b=[w for w, _ in reference], autojunk=False
    )
    latencies = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            latencies.append(delta_words[block.a + k][1] - reference[block.b + k][1])
    return latencies


def pcm24(samples: np.ndarray) -> bytes:
    wave = soxr.resample(samples, SAMPLE_RATE, 24000)
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


# ---- one stream ---------------------------------------------------------------------------


@dataclass
class Stream:
    audio: np.ndarray  # 16 kHz
    texts: list[str]
    offline_words: list[tuple[str, float]] = field(default_factory=list)  # (word, end s)
    deltas: list[tuple[str, float]] = field(default_factory=list)  # (word, arrival - start)
    finals: list[str] = field(default_factory=list)
    complete: bool = False
    error: str = ""

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def run_stream(url: str, stream: Stream, timeout_s: float) -> None:
    from websockets.sync.client import connect

    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            }
        },
    }
    payload = pcm24(stream.audio)
    step = int(24000 * CHUNK_S) * 2
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    try:
        with connect(ws_url, max_size=None, compression=None, open_timeout=30) as ws:
            ws.recv(timeout=30)  # session.created
            ws.send(json.dumps({"type": "session.update", "session": session}))
            ws.recv(timeout=30)  # session.updated
            started = time.monotonic()
            sent = threading.Event()

            def send() -> None:
                for i, offset in enumerate(range(0, len(payload), step)):
                    time.sleep(max(0.0, started + (i + 1) * CHUNK_S - time.monotonic()))
                    chunk = base64.b64encode(payload[offset : offset + step]).decode()
                    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                sent.set()

            threading.Thread(target=send, daemon=True).start()
            committed = 0
            deadline = started + stream.seconds + timeout_s
            while time.monotonic() < deadline:
                try:
                    event = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    if sent.is_set() and committed == len(stream.finals):
                        break
                    continue
                now = time.monotonic() - started
                kind = event["type"]
                if kind.endswith("transcription.delta"):
                    stream.deltas += [(w, now) for w in event["delta"].split()]
                elif kind == "input_audio_buffer.committed":
                    committed += 1
                elif kind.endswith("transcription.completed"):
                    stream.finals.append(event["transcript"])
                elif kind == "error":
                    stream.error = event["error"]["code"]
            stream.complete = sent.is_set() and committed == len(stream.finals)
    except Exception as exc:  # a refused or dropped session is a result, not a crash
        stream.error = f"{type(exc).__name__}: {exc}"


@dataclass
class Level:
    streams: int
    latencies: list[float]
    complete: int
    cpu_s: float
    audio_s: float
    wer: float
    offline_wer: float

    @property
    def ok(self) -> bool:
        return (
            self.complete == self.streams
            and bool(self.latencies)
            and percentile(self.latencies, 95) <= TARGET_P95_S
        )


def server_metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def offline_words(url: str, audio: np.ndarray) -> tuple[str, list[tuple[str, float]]]:
    answer = requests.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("call.wav", wav_bytes(audio), "audio/wav")},
        data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
        timeout=600,
    )
    answer.raise_for_status()
    body = answer.json()
    return body["text"], [(w["word"], float(w["end"])) for w in body.get("words", [])]


def build_streams(utterances: Sequence[Utterance], count: int, per_stream: int) -> list[Stream]:
    streams = []
    for indices in plan_streams(len(utterances), count, per_stream):
        call = make_call([utterances[i] for i in indices], [PAUSE_S] * len(indices), lead_s=0.5)
        streams.append(Stream(call.samples, call.texts))
    return streams


def run_level(url: str, utterances: Sequence[Utterance], count: int, per_stream: int) -> Level:
    streams = build_streams(utterances, count, per_stream)
    offline_texts = []
    for stream in streams:
        text, stream.offline_words = offline_words(url, stream.audio)
        offline_texts.append(text)
    audio_s = sum(s.seconds for s in streams)
    cpu_before = server_metric(url, "process_cpu_seconds_total")
    threads = [
        threading.Thread(target=run_stream, args=(url, s, 120.0), daemon=True) for s in streams
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    realtime_cpu = server_metric(url, "process_cpu_seconds_total") - cpu_before
    latencies = [lat for s in streams for lat in match_latencies(s.deltas, s.offline_words)]
    references = [" ".join(s.texts) for s in streams]
    errors = [s.error for s in streams if s.error]
    if errors:
        progress(f"{count} streams: errors {sorted(set(errors))}")
    return Level(
        streams=count,
        latencies=latencies,
        complete=sum(s.complete for s in streams),
        cpu_s=realtime_cpu,
        audio_s=audio_s,
        wer=word_error_rate(references, [" ".join(s.finals) for s in streams]),
        offline_wer=word_error_rate(references, offline_texts),
    )


# ---- telephone audio and VAD (offline / no server) ----------------------------------------


def telephone_wer(url: str, utterances: Sequence[Utterance]) -> dict[str, float]:
    from kubescribe_runtime import g711

    hypotheses: dict[str, list[str]] = {"wideband": [], "pcmu": [], "pcma": []}
    for utterance in utterances:
        audio = read_audio(utterance.audio)
        narrow = soxr.resample(audio, SAMPLE_RATE, 8000)
        for name in hypotheses:
            if name == "wideband":
                data = wav_bytes(audio)
            else:
                decoded = g711.to_float(g711.from_float(narrow, name), name)  # type: ignore[arg-type]
                buffer = io.BytesIO()
                sf.write(buffer, decoded, 8000, subtype="PCM_16", format="WAV")
                data = buffer.getvalue()
            answer = requests.post(
                url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", data, "audio/wav")},
                timeout=300,
            )
            hypotheses[name].append(answer.json()["text"])
    references = [u.text for u in utterances]
    return {name: word_error_rate(references, hyps) for name, hyps in hypotheses.items()}


# ---- the run ------------------------------------------------------------------------------


def capacity(levels: Sequence[Level]) -> str:
    """The most streams of the levels that met the goal (below the first that did not)."""
    held = 0
    for level in sorted(levels, key=lambda lv: lv.streams):
        if not level.ok:
            return str(held)
        held = level.streams
    return f"at least {held} (the most tried)"


def render(
    args: object,
    settings: Settings,
    levels: list[Level],
    offline_cpu_per_s: float,
    telephone: dict[str, float],
    artifact: Path,
    threads: int,
    test_set: Sequence[Utterance],
) -> str:
    smoke = "smoke (tiny sizes: not a measurement)" if settings is SMOKE else "full"
    lines = [
        f"Run: {smoke}; artifact {artifact_label(artifact)}; server flags `--threads {threads} "
        f"--max-sessions 64 --http-threads 80`, defaults otherwise (partials every 500 ms). "
        f"Each stream: {settings.sentences_per_stream} test-set sentences, {PAUSE_S:g} s "
        "pauses, 24 kHz PCM in 100 ms appends at real-time pace, server VAD.",
        "",
        *machine_facts(threads, ("onnxruntime", "numpy", "gunicorn", "websockets")),
        "",
    ]
    rows = []
    for level in levels:
        lat = level.latencies
        rows.append(
            [
                level.streams,
                f"{level.complete}/{level.streams}",
                len(lat),
                fmt(percentile(lat, 50), 2) if lat else "–",
                fmt(percentile(lat, 95), 2) if lat else "–",
                f"{level.cpu_s / level.audio_s:.3f}" if level.audio_s else "–",
                f"{level.cpu_s / level.audio_s / offline_cpu_per_s:.1f}×"
                if offline_cpu_per_s > 0
                else "–",
                f"{100 * level.wer:.1f} %",
                f"{100 * level.offline_wer:.1f} %",
            ]
        )
    lines.append(
        markdown_table(
            [
                "streams", "turns complete", "delta words", "partial p50 s", "partial p95 s",
                "CPU s per audio s", "vs offline", "final WER", "offline WER",
            ],
            rows,
        )
    )  # fmt: skip
    widest = max(levels, key=lambda lv: lv.streams)
    lines += [
        "",
        f"Final transcripts against offline: at {widest.streams} streams (the calls cover "
        f"{min(widest.streams * settings.sentences_per_stream, len(test_set))} of the "
        f"{len(test_set)} test-set sentences) the sessions' WER is {100 * widest.wer:.1f} %, "
        f"the offline route's on the same calls {100 * widest.offline_wer:.1f} % and on the "
        f"test set file by file {100 * telephone['wideband']:.1f} % "
        f"(difference to the latter: {100 * (widest.wer - telephone['wideband']):+.1f} points).",
    ]
    lines += [
        "",
        f"Offline, the same calls cost {offline_cpu_per_s:.3f} CPU s per audio second. "
        f"Most concurrent real-time streams this machine holds (partial p95 ≤ "
        f"{TARGET_P95_S:g} s, every turn completed): **{capacity(levels)}** "
        f"(levels tried: {', '.join(str(lv.streams) for lv in levels)}).",
        "",
        "Telephone audio: the test set transcribed offline after 8 kHz G.711 (resampled to "
        "8 kHz, encoded, decoded, sent as 8 kHz WAV):",
        "",
        markdown_table(
            ["audio", "WER"], [[name, f"{100 * wer:.1f} %"] for name, wer in telephone.items()]
        ),
        "",
        "Server VAD turn boundaries, before and after Silero VAD: `python -m bench.turns`.",
    ]
    return "\n".join(lines)


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "streaming benchmark")
    add_artifact_options(parser)
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact).resolve()
    utterances = read_testset()
    if settings.utterances:
        utterances = utterances[: settings.utterances]
    levels: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        extra = ["--max-sessions", "64"]
        with ServerProcess(artifact, args.threads, 16, 10, Path(tmp) / "server.log", extra) as srv:
            progress("telephone audio: the test set offline, wideband and G.711")
            telephone = telephone_wer(srv.url, utterances)
            offline_cpu = offline_audio = 0.0
            for count in settings.levels:
                level = run_level(srv.url, utterances, count, settings.sentences_per_stream)
                levels.append(level)
                lat = level.latencies
                progress(
                    f"{count} streams: {level.complete}/{count} complete, partial p95 "
                    f"{percentile(lat, 95) if lat else float('nan'):.2f} s, "
                    f"final WER {100 * level.wer:.1f} % (offline {100 * level.offline_wer:.1f} %)"
                )
            # Offline cost of the same audio: the first levels' calls, transcribed whole.
            for count in settings.levels[:2]:
                for stream in build_streams(utterances, count, settings.sentences_per_stream):
                    before = server_metric(srv.url, "process_cpu_seconds_total")
                    offline_words(srv.url, stream.audio)
                    offline_cpu += server_metric(srv.url, "process_cpu_seconds_total") - before
                    offline_audio += stream.seconds
    body = render(
        args, settings, levels, offline_cpu / max(offline_audio, 1e-9), telephone,
        artifact, args.threads, utterances,
    )  # fmt: skip
    finish(args, SECTION, "Realtime sessions (`python -m bench.streaming`)", body)
    return 0


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
