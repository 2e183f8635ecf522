"""End to end: the real `kubescribe serve` process on loopback, the bundled demo model and the
committed held-out test set. Transcripts are scored with jiwer against the references."""

from __future__ import annotations

import io
import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import onnx_asr
import openai
import pytest
import requests
import rt_bad_inputs
import soundfile as sf
from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
from kubescribe_runtime.manifest import ArtifactManifest
from kubescribe_runtime.service import build_transcriber
from rt_server import ROOT, ServerProcess, metric, post, running, start_server

pytestmark = pytest.mark.xdist_group("runtime-server")

TESTSET = ROOT / "examples" / "testset"
SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
SAMPLE_TEXT = (ROOT / "examples" / "audio" / "sample.txt").read_text(encoding="utf-8").strip()
SR = 16000
# The runtime must reproduce the WER the artifact was released with (same features, same
# decoding); a little slack covers nothing but rounding in the manifest.
WER_SLACK = 0.005
MAX_AUDIO_SECONDS = 900
MAX_UPLOAD_MB = 24


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    lines = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [Clip(TESTSET / e["audio"], e["text"]) for e in entries]


@pytest.fixture(scope="module")
def released_wer() -> float:
    manifest = ArtifactManifest.load(DEMO_MODEL_DIR)
    results = [e.wer for e in manifest.evaluation if e.model_file == "model.onnx"]
    assert results, "the demo artifact records the WER it was released with"
    return min(results)


@pytest.fixture(scope="module")
def utterance_ok(released_wer: float) -> Callable[[str], bool]:
    """A correct transcript of the sample clip, for a model of the released quality: another
    clip's text, an empty or garbled answer score about 1.0."""
    bound = min(0.9, released_wer + 0.2)
    return lambda text: wer(SAMPLE_TEXT, text) <= bound


@pytest.fixture(scope="module")
def sequential(clips: list[Clip]) -> dict[Path, str]:
    """Each clip alone through the pipeline in-process (batches of one): the reference for
    what batching must not change."""
    transcriber = build_transcriber(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1))
    try:
        return {c.path: transcriber.transcribe(c.path.read_bytes()).text for c in clips}
    finally:
        transcriber.batcher.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        DEMO_MODEL_DIR,
        tmp_path_factory.mktemp("logs"),
        "--max-batch-size", "8",
        "--max-delay-ms", "100",
        "--max-audio-seconds", str(MAX_AUDIO_SECONDS),
        "--max-upload-mb", str(MAX_UPLOAD_MB),
        "--http-threads", "24",
    ) as process:  # fmt: skip
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def wer(reference: str | list[str], hypothesis: str | list[str]) -> float:
    return float(jiwer.wer(reference, hypothesis))


# -- transcripts ------------------------------------------------------------------------------


def test_testset_concurrently_shares_batches_and_matches_released_wer(
    server: ServerProcess, clips: list[Clip], sequential: dict[Path, str], released_wer: float
) -> None:
    batches_before = metric(server, "kubescribe_batch_size_count")
    windows_before = metric(server, "kubescribe_batch_size_sum")
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda c: post(server.url, c.path.read_bytes(), c.path.name), clips)
        )
    assert all(a.status_code == 200 for a in answers), [
        a.text for a in answers if a.status_code != 200
    ]
    texts = [a.json()["text"] for a in answers]
    # Every response is that clip's own transcript, exactly as when it ran alone ...
    assert texts == [sequential[c.path] for c in clips]
    # ... while the requests really shared batches.
    batches = metric(server, "kubescribe_batch_size_count") - batches_before
    windows = metric(server, "kubescribe_batch_size_sum") - windows_before
    assert windows == len(clips)
    assert batches <= windows / 2, f"{windows} windows in {batches} batches"
    # And the transcripts are right: the WER the artifact was released with.
    score = wer([c.text for c in clips], texts)
    assert score <= released_wer + WER_SLACK, score


def test_same_transcripts_as_onnx_asr(clips: list[Clip], sequential: dict[Path, str]) -> None:
    """Contract 2: one artifact, two runtimes (onnx-asr's own NeMo front end), one transcript."""
    model = onnx_asr.load_model("nemo-conformer-ctc", str(DEMO_MODEL_DIR))
    for clip in clips[:20]:
        samples, rate = sf.read(clip.path, dtype="float32")
        assert model.recognize(samples, sample_rate=rate) == sequential[clip.path], clip.path.name


def test_openai_client(client: openai.OpenAI, utterance_ok: Callable[[str], bool]) -> None:
    with SAMPLE.open("rb") as audio:
        plain = client.audio.transcriptions.create(model="demo", file=audio)
    assert utterance_ok(plain.text)
    with SAMPLE.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="demo",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.text == plain.text
    assert verbose.words and " ".join(w.word for w in verbose.words) == plain.text
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and all(w.end > w.start for w in verbose.words)
    duration = sf.info(str(SAMPLE)).duration
    assert starts[0] >= 0 and verbose.words[-1].end <= duration + 0.05
    assert verbose.duration == pytest.approx(duration, abs=0.01)
    assert verbose.segments and verbose.segments[0].text
    with SAMPLE.open("rb") as audio:
        srt = client.audio.transcriptions.create(model="demo", file=audio, response_format="srt")
    assert str(srt).startswith("1\n00:00:") and " --> " in str(srt)
    with SAMPLE.open("rb") as audio:
        text = client.audio.transcriptions.create(model="demo", file=audio, response_format="text")
    assert str(text).strip() == plain.text
    (model,) = client.models.list().data
    assert model.id == ArtifactManifest.load(DEMO_MODEL_DIR).name
    with pytest.raises(openai.APIStatusError, match="unsupported audio format") as refused:
        client.audio.transcriptions.create(model="demo", file=("notes.txt", b"hello, world"))
    assert refused.value.status_code == 415
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.audio.transcriptions.create(model="demo", file=("empty.wav", b""))


def test_ten_minutes_of_audio(
    server: ServerProcess, clips: list[Clip], sequential: dict[Path, str], released_wer: float
) -> None:
    """The committed clips, concatenated with pauses until past ten minutes, in one request:
    windowed, stitched, and as right as the clips are alone."""
    gap = np.zeros(int(0.6 * SR), dtype=np.float32)
    parts: list[np.ndarray] = []
    words: list[str] = []
    total = 0
    while total < 10 * 60 * SR:
        for clip in clips:
            samples, rate = sf.read(clip.path, dtype="float32")
            assert rate == SR
            parts += [samples, gap]
            words.append(clip.text)
            total += len(samples) + len(gap)
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate(parts), SR, format="FLAC", subtype="PCM_16")
    answer = post(server.url, buffer.getvalue(), "long.flac", response_format="verbose_json")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["duration"] >= 600
    # As right as the clips alone, within what the wider context costs this model (its per-
    # utterance normalisation now spans several clips; the window length itself barely matters,
    # and the seams are checked word by word with the tone model in test_model.py).
    assert wer(" ".join(words), body["text"]) <= released_wer + 0.15
    own_words = sum(len(sequential[c.path].split()) for c in clips) * len(words) / len(clips)
    assert 0.85 * own_words <= len(body["text"].split()) <= 1.1 * own_words
    ends = [s["end"] for s in body["segments"]]
    assert ends == sorted(ends) and ends[-1] <= body["duration"] + 0.05


# -- bad input -------------------------------------------------------------------------------


def _sample() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(SAMPLE, dtype="float32")
    return samples, rate


def test_bad_input_table_then_correct_transcripts(
    server: ServerProcess, utterance_ok: Callable[[str], bool]
) -> None:
    table = rt_bad_inputs.cases(_sample, MAX_AUDIO_SECONDS, MAX_UPLOAD_MB)
    assert sum(1 for case in table if case.status >= 400) >= 20
    failures = rt_bad_inputs.run(server.url, table, utterance_ok)
    assert failures == []
    # the server is unharmed: a correct transcript, still ready
    answer = post(server.url, SAMPLE.read_bytes())
    assert answer.status_code == 200
    assert utterance_ok(answer.json()["text"])
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200


def test_int8_model_file_reproduces_its_released_wer(clips: list[Clip]) -> None:
    manifest = ArtifactManifest.load(DEMO_MODEL_DIR)
    (released,) = [e.wer for e in manifest.evaluation if e.model_file == "model.int8.onnx"]
    config = ServeConfig(model_dir=DEMO_MODEL_DIR, model_file="model.int8.onnx")
    transcriber = build_transcriber(config)
    try:
        assert transcriber.model.artifact.model_path.name == "model.int8.onnx"
        texts = [transcriber.transcribe(c.path.read_bytes()).text for c in clips]
    finally:
        transcriber.batcher.close()
    assert wer([c.text for c in clips], texts) <= released + WER_SLACK


def test_sigterm_under_load_completes_every_accepted_request(
    tmp_path: Path, clips: list[Clip], sequential: dict[Path, str]
) -> None:
    # Requests held in the batcher for 3 s (the whole delay, even with nobody else coming).
    process = start_server(
        DEMO_MODEL_DIR,
        tmp_path,
        "--max-delay-ms",
        "3000",
        "--batch-wait-full-delay",
        "--max-batch-size",
        "32",
    )
    load = clips[:12]
    try:
        with ThreadPoolExecutor(len(load)) as pool:
            futures = [
                pool.submit(post, process.url, c.path.read_bytes(), c.path.name) for c in load
            ]
            deadline = time.monotonic() + 30
            while metric(process, "kubescribe_requests_in_flight") < len(load):
                assert time.monotonic() < deadline, "the load never got in flight"
                time.sleep(0.02)
            process.process.send_signal(signal.SIGTERM)
            answers = [f.result(60) for f in futures]
        assert [a.status_code for a in answers] == [200] * len(load)
        assert [a.json()["text"] for a in answers] == [sequential[c.path] for c in load]
        assert process.process.wait(30) == 0
    finally:
        if process.process.poll() is None:
            process.process.kill()


def test_a_lone_request_does_not_wait_for_batch_mates(utterance_ok: Callable[[str], bool]) -> None:
    # An hour of --max-delay-ms and a 60 s request timeout: the request completes only because
    # the batch closes as soon as no other request is preparing audio.
    config = ServeConfig(
        model_dir=DEMO_MODEL_DIR,
        max_delay_ms=3_600_000,
        request_timeout_s=60,
        window_seconds=3,
        window_overlap_seconds=0.5,
    )
    transcriber = build_transcriber(config)
    try:
        # A long-ish clip in short windows: each window is its own lone batch in turn.
        transcript = transcriber.transcribe(SAMPLE.read_bytes())
    finally:
        transcriber.batcher.close()
    assert utterance_ok(transcript.text), transcript.text
