"""Silence and noise are not decoded into words: the pipeline's voice activity detection on the
real demo model and the committed test set (in-process, batches of one)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jiwer
import numpy as np
import pytest
import soundfile as sf
from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
from kubescribe_runtime.ctc import Segment
from kubescribe_runtime.manifest import ArtifactManifest
from kubescribe_runtime.metrics import Metrics
from kubescribe_runtime.service import build_transcriber
from kubescribe_runtime.transcriber import BlankTrack, Transcriber, with_no_speech_probs
from rt_server import ROOT

TESTSET = ROOT / "examples" / "testset"
SR = 16000
PAD_S = 10.0
# The bound: padding moves the WER by at most one point.
WER_POINT = 0.01


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray
    text: str


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def quiet_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """White noise at -60 dBFS (RMS)."""
    rng = np.random.default_rng(seed)
    return (1e-3 * rng.standard_normal(round(seconds * SR))).astype(np.float32)


PADDINGS: dict[str, Callable[[float], np.ndarray]] = {
    "silence": silence,
    "noise at -60 dBFS": quiet_noise,
}


def wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def padded(clip: np.ndarray, padding: Callable[[float], np.ndarray]) -> np.ndarray:
    return np.concatenate([padding(PAD_S), clip, padding(PAD_S)])


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    lines = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    result = []
    for entry in entries:
        samples, rate = sf.read(TESTSET / entry["audio"], dtype="float32")
        assert rate == SR
        result.append(Clip(np.asarray(samples), entry["text"]))
    return result


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="module")
def transcriber(metrics: Metrics) -> Iterator[Transcriber]:
    built = build_transcriber(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1), metrics)
    yield built
    built.batcher.close()


@pytest.fixture(scope="module")
def without_vad() -> Iterator[Transcriber]:
    config = ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1, vad="off")
    built = build_transcriber(config)
    yield built
    built.batcher.close()


def wer_of(
    transcriber: Transcriber, clips: list[Clip], audio: Callable[[Clip], np.ndarray]
) -> float:
    hypotheses = [transcriber.transcribe(wav(audio(c))).text for c in clips]
    return float(jiwer.wer([c.text for c in clips], hypotheses))


@pytest.fixture(scope="module")
def clean_wer(transcriber: Transcriber, clips: list[Clip]) -> float:
    return wer_of(transcriber, clips, lambda c: c.samples)


def sample_value(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_with_vad_the_clean_testset_keeps_its_released_wer(clean_wer: float) -> None:
    # Clean clips have no long non-speech: the VAD leaves them exactly as they were.
    manifest = ArtifactManifest.load(DEMO_MODEL_DIR)
    released = min(e.wer for e in manifest.evaluation if e.model_file == "model.onnx")
    assert clean_wer <= released + 0.005, (clean_wer, released)


@pytest.mark.parametrize("name", list(PADDINGS))
def test_the_testset_padded_with_ten_seconds_loses_at_most_a_wer_point_against_clean(
    transcriber: Transcriber, clips: list[Clip], clean_wer: float, name: str
) -> None:
    # Padding must not cost more than a point. With Silero VAD it gains (full test set: 7.81 %
    # padded against 10.57 % clean): the crop of a padded clip keeps 0.3 s around the speech,
    # while a clean clip's own quiet edges (under 1 s) are decoded as they came.
    score = wer_of(transcriber, clips, lambda c: padded(c.samples, PADDINGS[name]))
    assert score <= clean_wer + WER_POINT, (name, score, clean_wer)


@pytest.mark.parametrize("name", list(PADDINGS))
def test_without_vad_the_same_padding_ruins_the_transcripts(
    without_vad: Transcriber, clips: list[Clip], name: str
) -> None:
    # What the test above guards against (a few clips suffice to show it).
    score = wer_of(without_vad, clips[:6], lambda c: padded(c.samples, PADDINGS[name]))
    assert score > 0.3, score


@pytest.mark.parametrize("name", list(PADDINGS))
def test_audio_without_speech_is_not_decoded(
    transcriber: Transcriber, metrics: Metrics, name: str
) -> None:
    skipped = sample_value(metrics, "kubescribe_windows_skipped_total")
    decoded = sample_value(metrics, "kubescribe_audio_processed_seconds_total")
    result = transcriber.transcribe(wav(PADDINGS[name](45.0)))
    assert result.text == "" and result.segments == []
    assert result.duration_s == pytest.approx(45.0)
    assert sample_value(metrics, "kubescribe_windows_skipped_total") - skipped == 3
    assert sample_value(metrics, "kubescribe_audio_processed_seconds_total") == decoded


def test_speech_under_steady_noise_is_not_cut(
    transcriber: Transcriber, without_vad: Transcriber, clips: list[Clip]
) -> None:
    # White noise at -30 dBFS under and around the speech (about 10 dB below it): the
    # detector hears the speech through it, and the speech is still decoded whole.
    subset = clips[:16]
    clean = wer_of(transcriber, subset, lambda c: c.samples)

    def noisy(clip: Clip) -> np.ndarray:
        level = 10 ** (-30 / 20) / 1e-3  # quiet_noise is at -60 dBFS
        audio = np.concatenate([silence(PAD_S), clip.samples, silence(PAD_S)])
        return (audio + level * quiet_noise(len(audio) / SR, seed=len(clip.samples))).clip(-1, 1)

    with_vad = wer_of(transcriber, subset, noisy)
    assert with_vad <= clean + 0.05, (with_vad, clean)
    assert wer_of(without_vad, subset, noisy) > with_vad


def test_words_keep_their_place_in_time_after_the_silence_is_cut(
    transcriber: Transcriber, clips: list[Clip]
) -> None:
    clip = clips[0].samples
    clean = transcriber.transcribe(wav(clip))
    shifted = transcriber.transcribe(wav(padded(clip, silence)))
    assert shifted.duration_s == pytest.approx(len(clip) / SR + 2 * PAD_S)
    # (The spelling of a word may differ: the features are normalised over a shorter stretch.)
    for before, after in zip(clean.words, shifted.words, strict=True):
        assert after.start == pytest.approx(before.start + PAD_S, abs=0.1)
        assert after.end == pytest.approx(before.end + PAD_S, abs=0.1)


def test_a_long_pause_inside_a_window_does_not_dominate_the_features(
    transcriber: Transcriber, without_vad: Transcriber, clips: list[Clip]
) -> None:
    # Two utterances 6 s apart share one 20 s window: with the pause left out of the feature
    # statistics they are recognised about as well as alone.
    pairs = [(clips[i], clips[i + 1]) for i in range(0, 16, 2)]
    references = [f"{a.text} {b.text}" for a, b in pairs]
    audio = [np.concatenate([a.samples, silence(6.0), b.samples]) for a, b in pairs]
    singles = [c for pair in pairs for c in pair]
    alone_texts = [transcriber.transcribe(wav(c.samples)).text for c in singles]
    alone = float(jiwer.wer([c.text for c in singles], alone_texts))
    with_vad = float(jiwer.wer(references, [transcriber.transcribe(wav(a)).text for a in audio]))
    without = float(jiwer.wer(references, [without_vad.transcribe(wav(a)).text for a in audio]))
    assert with_vad <= alone + 0.03, (with_vad, alone)
    assert without > with_vad, (without, with_vad)


def test_segments_of_real_speech_have_a_small_no_speech_prob(
    transcriber: Transcriber, clips: list[Clip]
) -> None:
    result = transcriber.transcribe(wav(padded(clips[1].samples, quiet_noise)))
    assert result.segments
    assert all(0.0 <= s.no_speech_prob < 0.01 for s in result.segments)


def test_no_speech_prob_comes_from_the_window_that_saw_the_segment() -> None:
    frame_s = 0.04
    blank = np.log(np.array([0.9] * 10 + [0.01] * 5 + [0.9] * 10, dtype=np.float32))[:, None]
    tracks = [BlankTrack(0.0, frame_s, blank[:15]), BlankTrack(0.4, frame_s, blank[10:])]
    segments = [
        Segment(0, 0.0, 0.2, "quiet", -1.0),  # 5 frames at 0.9, in the first track
        Segment(1, 0.4, 0.6, "loud", -0.1),  # 5 frames at 0.01, in both
        Segment(2, 0.8, 0.96, "late", -1.0),  # 4 frames at 0.9, only in the second
        Segment(3, 5.0, 6.0, "nowhere", -1.0),  # no track: stays 0
    ]
    probs = [s.no_speech_prob for s in with_no_speech_probs(segments, tracks)]
    assert probs == pytest.approx([0.9**5, 0.01**5, 0.9**4, 0.0], rel=1e-4)
