"""Voice activity detection: Silero VAD's ONNX model (vendored with its provenance, run with the
runtime's onnxruntime at 8 and 16 kHz), its probabilities turned into regions with hysteresis,
offline and fed chunk by chunk; the no-speech probability from CTC log-probabilities."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import soxr
from kubescribe_runtime import silero
from kubescribe_runtime.vad import (
    SpeechDetector,
    SpeechEvent,
    VadSettings,
    no_speech_prob,
    regions_of,
    speech_regions,
    widen,
)
from rt_server import ROOT

SR = 16000
TESTSET = ROOT / "examples" / "testset"
CHUNK_S = 0.032


def speech_probs(samples: np.ndarray, rate: int) -> np.ndarray:
    """Offline: one probability per chunk of a waveform, a partial last chunk padded with zeros
    (as Silero's own ``get_speech_timestamps`` does)."""
    probs = silero.SpeechProbs(rate)
    head = probs.feed(samples)
    rest = probs.tail()
    if len(rest) == 0:
        return head
    padded = np.concatenate([rest, np.zeros(-len(rest) % probs.chunk, dtype=np.float32)])
    return np.concatenate([head, probs.feed(padded)])


def tone(seconds: float, level_db: float, hz: float = 440.0, rate: int = SR) -> np.ndarray:
    """A sine whose RMS level is ``level_db`` dBFS."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sqrt(2) * 10 ** (level_db / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, level_db: float, seed: int = 0, rate: int = SR) -> np.ndarray:
    """White noise whose RMS level is ``level_db`` dBFS."""
    rng = np.random.default_rng(seed)
    return (10 ** (level_db / 20) * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def silence(seconds: float, rate: int = SR) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def clip(index: int = 0) -> np.ndarray:
    line = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[index]
    samples, rate = sf.read(TESTSET / json.loads(line)["audio"], dtype="float32")
    assert rate == SR
    return np.asarray(samples)


def first_clip() -> np.ndarray:
    return clip(0)


def at_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    return samples if rate == SR else soxr.resample(samples, SR, rate).astype(np.float32)


# -- the vendored model -----------------------------------------------------------------------


def test_the_vendored_model_is_the_documented_file_of_the_documented_wheel() -> None:
    record = silero.provenance()
    data = silero.model_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert len(data) == record["size"]
    assert record["license"] == "MIT"
    licence = silero.asset(record["license_file"]).read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "Silero Team" in licence
    source = record["source"]
    assert source["wheel"] == f"silero_vad-{source['version']}-py3-none-any.whl"
    assert re.fullmatch(r"[0-9a-f]{64}", source["wheel_sha256"])
    # The docs name the same file (docs/api.md).
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert record["sha256"] in api and source["wheel"] in api


def test_the_model_ships_in_the_runtime_package_and_image() -> None:
    # The images `pip install .` the sources (runtime/ is in their build context): every asset
    # must be package data, or the installed runtime would have no detector.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    assets = sorted(silero.model_path().parent.iterdir())
    assert {a.name for a in assets} >= {"silero_vad.onnx", "silero_vad.provenance.json"}
    for path in assets:
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path.name
    for dockerfile in ("runtime/Dockerfile", "runtime/Dockerfile.cpu"):
        text = (ROOT / dockerfile).read_text(encoding="utf-8")
        assert "COPY runtime ./runtime" in text and "pip install --no-deps ." in text


def test_the_model_has_silero_v5_signature() -> None:
    session = ort.InferenceSession(str(silero.model_path()), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs["input"][0] == "tensor(float)" and len(inputs["input"][1]) == 2
    assert inputs["state"] == ("tensor(float)", [2, None, 128])
    assert inputs["sr"] == ("tensor(int64)", [])
    assert [o.name for o in session.get_outputs()] == ["output", "stateN"]


@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_is_speech_and_tones_noise_and_silence_are_not_at_8_and_16_khz(rate: int) -> None:
    speech = speech_probs(at_rate(clip(0), rate), rate)
    assert silero.SpeechProbs(rate).chunk == {8000: 256, 16000: 512}[rate]
    assert len(speech) == pytest.approx(len(clip(0)) / SR / CHUNK_S, abs=1)
    assert np.mean(speech > 0.5) > 0.6
    for other in (tone(3.0, -20.0, rate=rate), noise(3.0, -30.0, rate=rate), silence(3.0, rate)):
        assert speech_probs(other, rate).max() < 0.5


def test_another_rate_is_resampled_for_the_model() -> None:
    probs = speech_probs(at_rate(clip(0), 24000), 24000)
    assert len(probs) == pytest.approx(len(clip(0)) / SR / CHUNK_S, abs=2)
    assert np.mean(probs > 0.5) > 0.6


def test_streams_keep_their_own_state() -> None:
    # One shared model, two streams: interleaved feeding gives each its own probabilities.
    a, b = clip(0), noise(3.0, -30.0)
    alone_a, alone_b = speech_probs(a, SR), speech_probs(b, SR)
    one, two = silero.SpeechProbs(SR), silero.SpeechProbs(SR)
    got_a: list[np.ndarray] = []
    got_b: list[np.ndarray] = []
    for i in range(0, max(len(a), len(b)), 1600):
        got_a.append(one.feed(a[i : i + 1600]))
        got_b.append(two.feed(b[i : i + 1600]))
    n_a, n_b = len(a) // 512, len(b) // 512
    np.testing.assert_allclose(np.concatenate(got_a), alone_a[:n_a], atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got_b), alone_b[:n_b], atol=1e-6)


# -- the detector -----------------------------------------------------------------------------


def events_of(samples: np.ndarray, chunk: int | None = None) -> list[SpeechEvent]:
    detector = SpeechDetector(SR)
    step = chunk or len(samples)
    events: list[SpeechEvent] = []
    for start in range(0, len(samples), step):
        events += detector.feed(samples[start : start + step])
    return events + detector.flush()


def test_settings_refuse_nonsense() -> None:
    for changes in ({"threshold": 0.0}, {"threshold": 1.0}, {"hangover_s": -1.0}):
        with pytest.raises(ValueError):
            VadSettings(**changes)


def test_an_utterance_between_silences_starts_and_stops_near_its_edges() -> None:
    speech = clip(0)
    audio = np.concatenate([silence(1.0), speech, silence(1.0)])
    events = events_of(audio)
    assert [e.kind for e in events] == ["started", "stopped"]
    # The clip's own leading and trailing quiet is its business; the speech lies inside it.
    assert 1.0 - CHUNK_S <= events[0].time_s <= 1.0 + len(speech) / SR / 2
    assert 1.0 + len(speech) / SR / 2 <= events[1].time_s <= 1.0 + len(speech) / SR + 0.1


@pytest.mark.parametrize("chunk", [1, 7, 160, 333, 4800, 16000])
def test_chunked_feeding_gives_the_same_events_as_one_feed(chunk: int) -> None:
    audio = np.concatenate([noise(0.7, -55.0), clip(1), noise(0.9, -55.0, 1), clip(2)])
    whole = events_of(audio)
    assert events_of(audio, chunk) == whole
    assert [e.kind for e in whole] == ["started", "stopped", "started", "stopped"]


@pytest.mark.parametrize("level_db", [-60.0, -30.0, -10.0])
def test_noise_and_tones_are_never_speech(level_db: float) -> None:
    assert events_of(noise(10.0, level_db)) == []
    assert events_of(tone(5.0, level_db, hz=425.0)) == []  # a dial tone


def test_speech_under_a_louder_background_still_counts() -> None:
    # Noise at -30 dBFS throughout, speech at about -20 dBFS from 5 s: one region around it.
    speech = clip(0)
    audio = noise(10.0 + len(speech) / SR, -30.0)
    audio[5 * SR : 5 * SR + len(speech)] += speech
    regions = regions_of(events_of(audio))
    assert len(regions) == 1
    assert 5.0 - CHUNK_S <= regions[0][0] <= 5.0 + len(speech) / SR / 2


def test_flush_closes_an_open_region_once() -> None:
    detector = SpeechDetector(SR)
    assert [e.kind for e in detector.feed(clip(0)[: 2 * SR])] == ["started"]
    assert detector.in_speech
    (stopped,) = detector.flush()
    assert stopped.kind == "stopped" and stopped.time_s <= 2.0 + CHUNK_S
    assert detector.flush() == []


# -- offline regions --------------------------------------------------------------------------


def test_widen_pads_clips_and_merges() -> None:
    assert widen([(0.1, 1.0), (1.4, 2.0), (3.0, 3.9)], 0.3, 4.0) == [
        (0.0, 2.3),
        (pytest.approx(2.7), 4.0),
    ]


@pytest.mark.parametrize(
    ("name", "padding"),
    [("silence", silence), ("noise at -60 dBFS", lambda s: noise(s, -60.0))],
)
def test_a_real_utterance_padded_with_ten_seconds_is_one_region_around_it(
    name: str, padding: object
) -> None:
    assert callable(padding)
    clip = first_clip()
    audio = np.concatenate([padding(10.0), clip, padding(10.0)])
    regions = speech_regions(audio, SR)
    assert len(regions) == 1, (name, regions)
    start, end = regions[0]
    clip_end = 10.0 + len(clip) / SR
    pad = VadSettings().pad_s
    assert 10.0 - pad - CHUNK_S <= start <= 10.0 + 0.5
    assert clip_end - 0.5 <= end <= clip_end + pad + CHUNK_S


def test_a_clean_utterance_is_all_speech() -> None:
    clip = first_clip()
    assert speech_regions(clip, SR) == [(0.0, pytest.approx(len(clip) / SR, abs=0.1))]


def test_empty_and_silent_audio_have_no_regions() -> None:
    assert speech_regions(np.zeros(0, dtype=np.float32), SR) == []
    assert speech_regions(silence(3.0), SR) == []


# -- the model's blank posteriors -------------------------------------------------------------


def logprobs_of(best: list[int], vocab: int = 3, confidence: float = 0.9) -> np.ndarray:
    """``[T, vocab]`` log-probabilities whose best token per frame is ``best``."""
    probs = np.full((len(best), vocab), (1 - confidence) / (vocab - 1))
    probs[np.arange(len(best)), best] = confidence
    return np.log(probs).astype(np.float32)


def test_no_speech_prob_is_the_probability_of_the_all_blank_path() -> None:
    silent = logprobs_of([2, 2, 2, 2], confidence=0.99)
    assert no_speech_prob(silent, 0.04) == pytest.approx(0.99**4, rel=1e-5)
    spoken = logprobs_of([2, 0, 1, 2], confidence=0.99)
    assert no_speech_prob(spoken, 0.04) == pytest.approx(0.99**2 * 0.005**2, rel=1e-4)
    assert no_speech_prob(spoken, 0.04, (0.0, 0.04)) == pytest.approx(0.99, rel=1e-5)
    assert no_speech_prob(spoken[:0], 0.04) == 1.0
