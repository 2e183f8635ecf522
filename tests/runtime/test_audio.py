"""Decoding: every common container and rate in, mono float32 at the model's rate out."""

from __future__ import annotations

import numpy as np
import pytest
from kubescribe_runtime import audio
from rt_fixtures import SR, encode, tone


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [
        ("WAV", "PCM_16", 16000),
        ("WAV", "FLOAT", 44100),
        ("FLAC", "PCM_16", 48000),
        ("OGG", "VORBIS", 22050),
        ("OGG", "OPUS", 48000),
        ("MP3", "MPEG_LAYER_III", 24000),
    ],
)
def test_formats_and_rates_decode_to_the_model_rate(fmt: str, subtype: str, rate: int) -> None:
    seconds = 1.5
    t = np.arange(int(seconds * rate)) / rate
    source = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    decoded = audio.decode(encode(source, rate, fmt, subtype), SR, max_seconds=60)
    assert decoded.dtype == np.float32
    assert abs(len(decoded) / SR - seconds) < 0.08  # codec priming/padding only
    assert abs(_dominant_hz(decoded, SR) - 440) < 5


def _stereo(left: np.ndarray, right: np.ndarray, rate: int = 48000) -> bytes:
    return encode(np.stack([left, right], axis=1).astype(np.float32), rate)


def _sine(hz: float, amplitude: float = 0.4, rate: int = 48000) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(rate) / rate)


def test_a_phase_inverted_pair_does_not_cancel_in_the_mix() -> None:
    # The same voice on both channels, one inverted (a miswired headset, a balanced line):
    # a plain mean is silence; the mix keeps the voice at its level.
    left = _sine(440) + _sine(1000, 0.1)
    decoded = audio.decode(_stereo(left, -left), SR, max_seconds=60)
    assert len(decoded) == SR
    assert abs(_dominant_hz(decoded, SR) - 440) < 5
    assert np.abs(decoded).max() == pytest.approx(np.abs(left).max(), rel=0.05)


def test_independent_channels_are_averaged() -> None:
    decoded = audio.decode(_stereo(_sine(440), _sine(1000, 0.2)), SR, max_seconds=60)
    spectrum = np.abs(np.fft.rfft(decoded))
    freqs = np.fft.rfftfreq(len(decoded), 1 / SR)
    level = {hz: spectrum[np.argmin(np.abs(freqs - hz))] for hz in (440, 1000)}
    assert level[440] == pytest.approx(2 * level[1000], rel=0.05)  # 0.4 and 0.2, halved


@pytest.mark.parametrize(("channel", "hz"), [(0, 440), (1, 1000)])
def test_one_channel_can_be_taken_alone(channel: int, hz: float) -> None:
    data = _stereo(_sine(440), _sine(1000))
    blocks = list(audio.iter_mono(data, SR, max_seconds=60, channel=channel))
    decoded = np.concatenate(blocks)
    assert abs(_dominant_hz(decoded, SR) - hz) < 5
    assert np.abs(decoded).max() == pytest.approx(0.4, rel=0.05)


def test_a_channel_that_does_not_exist_is_refused() -> None:
    with pytest.raises(audio.InvalidChannel, match="2 channel"):
        list(audio.iter_mono(_stereo(_sine(440), _sine(1000)), SR, 60, channel=2))


@pytest.mark.parametrize(("rate", "served"), [(4000, False), (8000, True), (192000, True),
                                              (200000, False)])  # fmt: skip
def test_declared_sample_rates_outside_8_to_192_khz_are_refused(rate: int, served: bool) -> None:
    data = encode(np.zeros(rate // 2, dtype=np.float32), rate)
    if served:
        assert audio.probe(data, 60).sample_rate == rate
    else:
        with pytest.raises(audio.UnsupportedSampleRate, match="8000 to 192000 Hz"):
            audio.probe(data, 60)
        with pytest.raises(audio.UnsupportedSampleRate):
            list(audio.iter_mono(data, SR, 60))


@pytest.mark.parametrize(
    ("size", "per_mb", "allowed"),
    [
        (1024 * 1024, 3600, 3600),  # one megabyte: an hour
        (1000, 3600, audio.MIN_ALLOWANCE_S),  # a tiny file: still the minimum
        (10 * 1024 * 1024, 3600, 7200),  # never beyond the absolute limit
        (1000, 0, 7200),  # 0: no bound per megabyte
    ],
)
def test_seconds_allowed_per_uploaded_megabyte(size: int, per_mb: float, allowed: float) -> None:
    assert audio.seconds_allowed(size, 7200, per_mb) == allowed


def test_a_tiny_file_cannot_claim_hours_of_audio() -> None:
    # Ten minutes of digital silence compress to a few kilobytes of FLAC.
    data = encode(np.zeros(600 * 8000, dtype=np.float32), 8000, "FLAC", "PCM_16")
    assert len(data) < 200_000
    with pytest.raises(audio.AudioTooLong, match="upload of this size may hold at most"):
        audio.probe(data, 7200, max_seconds_per_mb=3600)
    with pytest.raises(audio.AudioTooLong, match="upload of this size"):
        list(audio.iter_mono(data, SR, 7200, max_seconds_per_mb=3600))
    assert audio.probe(data, 7200).duration_s == 600  # without the bound


def test_streaming_blocks_are_bounded() -> None:
    long = np.tile(tone(440, 1.0), 30)
    blocks = list(audio.iter_mono(encode(long), SR, max_seconds=60))
    assert sum(len(b) for b in blocks) == len(long)
    assert max(len(b) for b in blocks) <= 2 * SR


def _wav_with_nan() -> bytes:
    samples = tone(440, 0.5)
    samples[100] = np.nan
    return encode(samples, SR, "WAV", "FLOAT")


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", audio.EmptyAudio, "empty"),
        (b"just some text, not audio\n" * 10, audio.UnsupportedAudio, "unsupported audio format"),
        (encode(tone(440, 1.0))[:30], audio.UnreadableAudio, "unreadable"),
        (encode(np.zeros(0, dtype=np.float32)), audio.EmptyAudio, "no samples"),
        (encode(np.zeros(1, dtype=np.float32)), audio.AudioTooShort, "at least 100 ms"),
        (_wav_with_nan(), audio.InvalidSamples, "NaN or infinite"),
        (encode(tone(440, 3.0)), audio.AudioTooLong, "limit is 2 s"),
    ],
)
def test_invalid_audio(data: bytes, error: type[audio.AudioError], message: str) -> None:
    with pytest.raises(error, match=message):
        audio.decode(data, SR, max_seconds=2)
