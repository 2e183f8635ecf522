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


def test_stereo_is_downmixed() -> None:
    t = np.arange(48000) / 48000
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = -left + 0.2 * np.sin(2 * np.pi * 1000 * t)  # the 440 Hz cancels in the mix
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    decoded = audio.decode(encode(stereo, 48000), SR, max_seconds=60)
    assert len(decoded) == SR
    assert abs(_dominant_hz(decoded, SR) - 1000) < 5
    assert np.abs(decoded).max() < 0.15


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
