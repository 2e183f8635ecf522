"""Voice activity detection: energy over an adaptive noise floor, with hysteresis, offline and
fed chunk by chunk; blank ratios and the no-speech probability from CTC log-probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from kubescribe_runtime.vad import (
    SILENCE_DB,
    SpeechDetector,
    SpeechEvent,
    VadSettings,
    blank_ratio,
    blank_ratios,
    frame_energies,
    no_speech_prob,
    regions_of,
    speech_regions,
    widen,
)
from rt_server import ROOT

SR = 16000
TESTSET = ROOT / "examples" / "testset"
FRAME_S = VadSettings().frame_s


def tone(seconds: float, level_db: float, hz: float = 440.0) -> np.ndarray:
    """A sine whose RMS level is ``level_db`` dBFS."""
    t = np.arange(round(seconds * SR)) / SR
    return (np.sqrt(2) * 10 ** (level_db / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, level_db: float, seed: int = 0) -> np.ndarray:
    """White noise whose RMS level is ``level_db`` dBFS."""
    rng = np.random.default_rng(seed)
    return (10 ** (level_db / 20) * rng.standard_normal(round(seconds * SR))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def first_clip() -> np.ndarray:
    entry = json.loads((TESTSET / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    samples, rate = sf.read(TESTSET / entry["audio"], dtype="float32")
    assert rate == SR
    return np.asarray(samples)


# -- frame energies ---------------------------------------------------------------------------


@pytest.mark.parametrize("level_db", [-6.0, -20.0, -45.0])
def test_a_sine_frame_has_its_rms_level(level_db: float) -> None:
    levels = frame_energies(tone(1.0, level_db, hz=500.0), SR)
    assert len(levels) == round(1.0 / FRAME_S)
    np.testing.assert_allclose(levels, level_db, atol=0.05)


def test_digital_silence_is_the_silence_level_and_partial_frames_are_left_out() -> None:
    levels = frame_energies(silence(0.105), SR, frame_s=0.01)
    assert len(levels) == 10
    assert (levels == SILENCE_DB).all()


def test_frame_energies_want_mono() -> None:
    with pytest.raises(ValueError, match="mono"):
        frame_energies(np.zeros((10, 2), dtype=np.float32), SR)


@pytest.mark.parametrize(
    "changes",
    [{"frame_s": 0.0}, {"start_s": -1.0}, {"hangover_s": -0.1}, {"floor_rise_db_per_s": -1.0}],
)
def test_settings_refuse_nonsense(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadSettings(**changes)


# -- the detector -----------------------------------------------------------------------------


def events_of(samples: np.ndarray, chunk: int | None = None) -> list[SpeechEvent]:
    detector = SpeechDetector(SR)
    step = chunk or len(samples)
    events: list[SpeechEvent] = []
    for start in range(0, len(samples), step):
        events += detector.feed(samples[start : start + step])
    return events + detector.flush()


def test_a_burst_between_silences_starts_and_stops_at_its_edges() -> None:
    audio = np.concatenate([silence(1.0), tone(1.0, -20.0), silence(1.0)])
    events = events_of(audio)
    assert [e.kind for e in events] == ["started", "stopped"]
    assert events[0].time_s == pytest.approx(1.0, abs=FRAME_S)
    assert events[1].time_s == pytest.approx(2.0, abs=FRAME_S)


@pytest.mark.parametrize("chunk", [1, 7, 160, 333, 4800, 16000])
def test_chunked_feeding_gives_the_same_events_as_one_feed(chunk: int) -> None:
    audio = np.concatenate(
        [noise(0.7, -55.0), tone(0.8, -18.0), noise(0.9, -55.0, 1), tone(0.5, -25.0)]
    )
    detector = SpeechDetector(SR, initial_floor_db=-55.0)
    whole = detector.feed(audio) + detector.flush()
    streamed = SpeechDetector(SR, initial_floor_db=-55.0)
    events: list[SpeechEvent] = []
    for start in range(0, len(audio), chunk):
        events += streamed.feed(audio[start : start + chunk])
    assert events + streamed.flush() == whole
    assert [e.kind for e in whole] == ["started", "stopped", "started", "stopped"]


def test_quiet_noise_is_never_speech() -> None:
    assert events_of(noise(10.0, -60.0)) == []


def test_the_floor_follows_a_louder_background_and_speech_above_it_still_counts() -> None:
    # A steady background at -40 dBFS (above the absolute minimum) stops counting as speech once
    # the floor has risen to it; a burst 20 dB above it still counts.
    hum = noise(12.0, -40.0)
    hum[int(10 * SR) : int(11 * SR)] += tone(1.0, -20.0)
    regions = regions_of(events_of(hum))
    assert regions[-1][0] == pytest.approx(10.0, abs=2 * FRAME_S)
    assert regions[-1][1] == pytest.approx(11.0, abs=2 * FRAME_S)
    assert all(end < 9.0 for _, end in regions[:-1])


def test_hysteresis_ignores_a_click_and_bridges_a_short_pause() -> None:
    settings = VadSettings()
    click = tone(settings.start_s / 2, -10.0)
    pause = silence(settings.hangover_s / 2)
    audio = np.concatenate(
        [silence(1.0), click, silence(1.0), tone(0.5, -20.0), pause, tone(0.5, -20.0), silence(1)]
    )
    regions = regions_of(events_of(audio))
    assert len(regions) == 1
    start = 1.0 + settings.start_s / 2 + 1.0
    assert regions[0][0] == pytest.approx(start, abs=FRAME_S)
    assert regions[0][1] == pytest.approx(start + 1.0 + settings.hangover_s / 2, abs=FRAME_S)


def test_speech_from_the_first_sample_is_found_when_the_first_chunk_is_long_enough() -> None:
    detector = SpeechDetector(SR)
    events = detector.feed(np.concatenate([tone(1.0, -20.0), silence(1.0)]))
    assert events[0] == SpeechEvent("started", 0.0)


def test_flush_closes_an_open_region_once() -> None:
    detector = SpeechDetector(SR, initial_floor_db=SILENCE_DB)
    assert [e.kind for e in detector.feed(tone(1.0, -20.0))] == ["started"]
    assert detector.in_speech
    assert detector.flush() == [SpeechEvent("stopped", pytest.approx(1.0))]
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
    assert 10.0 - pad - FRAME_S <= start <= 10.0
    assert clip_end - 0.2 <= end <= clip_end + pad + FRAME_S


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


def test_blank_ratio_counts_frames_whose_best_token_is_the_blank() -> None:
    logprobs = logprobs_of([2, 2, 0, 2, 1, 2, 2, 2])
    assert blank_ratio(logprobs) == pytest.approx(6 / 8)
    assert blank_ratio(logprobs, blank=0) == pytest.approx(1 / 8)
    assert blank_ratio(logprobs[:0]) == 1.0


def test_blank_ratios_per_region_in_seconds() -> None:
    logprobs = logprobs_of([2, 2, 2, 2, 0, 1, 0, 2])  # 40 ms frames
    assert blank_ratios(logprobs, 0.04, [(0.0, 0.16), (0.16, 0.28), (0.2, 9.0)]) == [
        1.0,
        0.0,
        pytest.approx(1 / 3),
    ]


def test_no_speech_prob_is_the_probability_of_the_all_blank_path() -> None:
    silent = logprobs_of([2, 2, 2, 2], confidence=0.99)
    assert no_speech_prob(silent, 0.04) == pytest.approx(0.99**4, rel=1e-5)
    spoken = logprobs_of([2, 0, 1, 2], confidence=0.99)
    assert no_speech_prob(spoken, 0.04) == pytest.approx(0.99**2 * 0.005**2, rel=1e-4)
    assert no_speech_prob(spoken, 0.04, (0.0, 0.04)) == pytest.approx(0.99, rel=1e-5)
    assert no_speech_prob(spoken[:0], 0.04) == 1.0
