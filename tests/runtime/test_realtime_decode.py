"""A session's decodes go through the server's one batcher, on a live flow (priority over file
windows), windowed exactly as a file is (issue 13.3, 13.5); a committed turn (``turn_detection``
null, manual commit) gives the file transcript of the same audio, speech, silence and noise alike
(issue 20.5): one window → VAD crop → batch → stitch path serves both."""

from __future__ import annotations

import base64
import io
import itertools
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
from kubescribe_runtime.model import AcousticModel, ModelInput
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime.decode import SessionDecoder
from kubescribe_runtime.realtime.session import DecodeRequest, Session
from kubescribe_runtime.scheduling import Priority
from kubescribe_runtime.service import build_transcriber
from kubescribe_runtime.transcriber import Transcriber
from rt_fixtures import TONE_TOKENS, tone_sentence, write_artifact
from rt_server import ROOT

TESTSET = ROOT / "examples" / "testset"


class RecordingFlow:
    def __init__(self, model: AcousticModel, live: bool) -> None:
        self.model = model
        self.live = live
        self.lengths: list[int] = []
        self.cancelled = False

    def submit(self, payload: ModelInput, length: int) -> Future[Any]:
        self.lengths.append(length)
        future: Future[Any] = Future()
        future.set_result(self.model.infer([payload])[0])
        return future

    def cancel(self) -> int:
        self.cancelled = True
        return 0


class RecordingBatcher:
    """Stands in for the dynamic batcher: records the flows opened on it."""

    def __init__(self, model: AcousticModel) -> None:
        self.model = model
        self.flows: list[RecordingFlow] = []

    def open_flow(self, priority: Priority = Priority.FILE) -> RecordingFlow:
        self.flows.append(RecordingFlow(self.model, priority is Priority.LIVE))
        return self.flows[-1]

    def submit(self, payload: ModelInput, length: int) -> Future[Any]:
        raise AssertionError("a session submits on its flow, not around it")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> AcousticModel:
    directory = write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
    return AcousticModel(load_artifact(Path(directory), "model.onnx"))


def test_a_session_decodes_on_one_live_flow_and_cancels_it_at_the_end(
    model: AcousticModel,
) -> None:
    batcher = RecordingBatcher(model)
    # Tones are no speech to Silero VAD: the tone model's audio is decoded whole.
    decoder = SessionDecoder(model, batcher, 20, 2, vad=False)  # type: ignore[arg-type]
    samples = tone_sentence("lo hi lo")
    for kind in ("partial", "final"):
        pending = decoder.submit(DecodeRequest(kind, "item", samples, 0.0))
        assert [w.word for w in decoder.words(pending)] == ["low", "high", "low"]
    (flow,) = batcher.flows
    assert flow.live
    decoder.close()
    assert flow.cancelled


def test_a_long_turn_is_windowed_and_stitched_as_a_file_is(model: AcousticModel) -> None:
    batcher = RecordingBatcher(model)
    decoder = SessionDecoder(model, batcher, 4, 1, vad=False)  # type: ignore[arg-type]
    samples = np.concatenate([tone_sentence("lo hi lo hi")] * 3)  # 10.8 s
    pending = decoder.submit(DecodeRequest("final", "item", samples, 10.0))
    assert len(batcher.flows[0].lengths) == 4  # windows start every 3 s: 0, 3, 6 and the tail
    words = decoder.words(pending)
    assert [w.word for w in words] == ["low", "high", "low", "high"] * 3
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))


# -- a committed turn is the file transcript of the same audio (issue 20.5) -------------------


@pytest.fixture(scope="module")
def demo() -> Transcriber:
    return build_transcriber(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1))


def sentence(index: int) -> np.ndarray:
    line = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[index]
    samples, rate = sf.read(TESTSET / json.loads(line)["audio"], dtype="float32")
    assert rate == 16000
    return np.asarray(samples)


def pcm24(samples: np.ndarray) -> bytes:
    """The audio as a client has it: 24 kHz PCM16 (what a Realtime session takes)."""
    wave = soxr.resample(samples, 16000, 24000)
    return (np.round(np.clip(wave, -1, 1) * 32767)).astype("<i2").tobytes()


def white(seconds: float, level: float, seed: int = 3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(
        np.float32
    )


def committed_turn(transcriber: Transcriber, payload: bytes) -> str:
    """A manual-commit session over ``payload`` (24 kHz PCM16, in 100 ms appends as a client
    sends): the committed turn's final decode, through the server's own batcher."""
    session = Session("t", "demo", ["en"], 16000)
    session.start()
    config = {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}
    update = {"type": "session.update", "session": {"type": "transcription",
              "audio": {"input": config}}}  # fmt: skip
    session.receive_text(json.dumps(update))
    for i in range(0, len(payload), 4800):
        chunk = base64.b64encode(payload[i : i + 4800]).decode()
        session.receive_text(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
    out = session.receive_text(json.dumps({"type": "input_audio_buffer.commit"}))
    (final,) = [o for o in out if isinstance(o, DecodeRequest) and o.kind == "final"]
    decoder = SessionDecoder(
        transcriber.model,
        transcriber.batcher,
        transcriber.settings.window_seconds,
        transcriber.settings.window_overlap_seconds,
        transcriber.settings.vad,
    )
    try:
        pending = decoder.submit(final)
        out = session.decoded(final, decoder.words(pending))
    finally:
        decoder.close()
    (completed,) = [json.loads(o.render()) for o in out if isinstance(o, ev.TranscriptCompleted)]
    return str(completed["transcript"])


def wav24(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    samples = np.frombuffer(payload, dtype="<i2")
    sf.write(buffer, samples, 24000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


AUDIO = {
    # Two sentences with a 3 s pause, quiet noise under it all: speech the VAD crops.
    "speech": lambda: (
        np.concatenate([white(1.0, 1e-3), sentence(0), white(3.0, 1e-3, 4), sentence(33)])
        + white(1.0 + 3.0 + (len(sentence(0)) + len(sentence(33))) / 16000, 3e-3, 5)
    ),
    # A sentence longer than a window: windowed and stitched alike.
    "speech over two windows": lambda: np.concatenate([sentence(i) for i in (1, 2, 3, 4, 5, 6)]),
    "silence": lambda: np.zeros(3 * 16000, dtype=np.float32),
    "noise": lambda: white(3.0, 0.05),
}


@pytest.mark.parametrize("name", list(AUDIO))
def test_a_committed_turn_is_the_file_transcript_of_the_same_audio(
    demo: Transcriber, name: str
) -> None:
    samples = AUDIO[name]()
    if name == "speech over two windows":
        assert len(samples) > demo.settings.window_seconds * 16000
    payload = pcm24(samples)
    file_text = demo.transcribe(wav24(payload)).text
    turn_text = committed_turn(demo, payload)
    assert turn_text == file_text
    if name in ("silence", "noise"):
        assert file_text == ""  # 3 s of noise: no invented words, in both
    else:
        assert len(file_text.split()) >= 10
