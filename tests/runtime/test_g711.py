"""G.711 μ-law and A-law, against the values of ITU-T G.711's tables.

G.711 gives the decoder's output in 14-bit (μ-law) and 13-bit (A-law) units; the runtime's
16-bit samples are those values times 4 and 8. The codes are the line characters after the
standard inversions (all bits for μ-law, the even bits — XOR 0x55 — for A-law).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr
from kubescribe_runtime import audio, g711

ALL_CODES = bytes(range(256))


@pytest.mark.parametrize(
    ("code", "itu_value"),
    [
        (0xFF, 0),  # positive zero
        (0x7F, 0),  # negative zero
        (0xFE, 2),  # first step of segment 0
        (0xF0, 30),  # top of segment 0
        (0xEF, 33),  # bottom of segment 1
        (0x80, 8031),  # largest positive
        (0x00, -8031),  # largest negative
        (0x70, -30),
    ],
)
def test_mu_law_decodes_to_the_itu_table_values(code: int, itu_value: int) -> None:
    assert int(g711.decode(bytes([code]), "pcmu")[0]) == 4 * itu_value


@pytest.mark.parametrize(
    ("code", "itu_value"),
    [
        (0xD5, 1),  # smallest positive
        (0x55, -1),  # smallest negative
        (0xDA, 31),  # top of segment 0 (0xDA ^ 0x55 = 0x8F)
        (0xC5, 33),  # bottom of segment 2 (0xC5 ^ 0x55 = 0x90)
        (0xAA, 4032),  # largest positive (0xAA ^ 0x55 = 0xFF)
        (0x2A, -4032),  # largest negative
    ],
)
def test_a_law_decodes_to_the_itu_table_values(code: int, itu_value: int) -> None:
    assert int(g711.decode(bytes([code]), "pcma")[0]) == 8 * itu_value


@pytest.mark.parametrize(
    ("law", "largest"),
    [("pcmu", 32124), ("pcma", 32256)],
)
def test_decoding_is_odd_symmetric_and_spans_the_law_range(law: g711.Law, largest: int) -> None:
    values = g711.decode(ALL_CODES, law).astype(np.int32)
    assert values.max() == largest
    assert values.min() == -largest
    assert sorted(values[values > 0]) == sorted(-values[values < 0])


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_every_code_survives_a_decode_encode_round_trip(law: g711.Law) -> None:
    again = g711.encode(g711.decode(ALL_CODES, law), law)
    expected = bytearray(ALL_CODES)
    if law == "pcmu":
        expected[0x7F] = 0xFF  # negative zero decodes to 0, which encodes as positive zero
    assert again == bytes(expected)


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_encoding_picks_the_nearest_step_below_the_clip(law: g711.Law) -> None:
    levels = np.unique(g711.decode(ALL_CODES, law).astype(np.int32))
    linear = np.arange(-32000, 32000, 7, dtype=np.int16)
    decoded = g711.decode(g711.encode(linear, law), law).astype(np.int32)
    step = np.diff(levels).max()
    assert np.all(np.abs(decoded - linear) <= step)
    # quantisation is monotonic: a louder input never gives a quieter output
    assert np.all(np.diff(decoded) >= 0)


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_a_tone_keeps_toll_quality_through_a_round_trip(law: g711.Law) -> None:
    t = np.arange(g711.SAMPLE_RATE) / g711.SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    back = g711.to_float(g711.from_float(tone, law), law)
    snr_db = 10 * np.log10(np.sum(tone**2) / np.sum((tone - back) ** 2))
    assert snr_db > 33  # G.711's companding keeps ~38 dB SNR over its range


def test_an_unknown_law_is_refused() -> None:
    with pytest.raises(ValueError, match="pcmu"):
        g711.decode(b"\x00", "g722")  # type: ignore[arg-type]


@pytest.mark.parametrize(("law", "subtype"), [("pcmu", "ULAW"), ("pcma", "ALAW")])
def test_libsndfile_reads_g711_wav_files_to_the_same_samples(law: g711.Law, subtype: str) -> None:
    """An independent decoder (libsndfile, which reads uploaded telephone WAVs) agrees."""
    buffer = io.BytesIO()
    sf.write(buffer, g711.to_float(ALL_CODES, law), g711.SAMPLE_RATE, format="WAV", subtype=subtype)
    samples, _ = sf.read(io.BytesIO(buffer.getvalue()), dtype="int16")
    assert np.array_equal(samples, g711.decode(ALL_CODES, law))


@pytest.mark.parametrize(("law", "subtype"), [("pcmu", "ULAW"), ("pcma", "ALAW")])
def test_an_uploaded_telephone_wav_and_a_raw_payload_give_the_same_16_khz_audio(
    law: g711.Law, subtype: str
) -> None:
    t = np.arange(2 * g711.SAMPLE_RATE) / g711.SAMPLE_RATE
    payload = g711.from_float(0.4 * np.sin(2 * np.pi * 440 * t), law)
    buffer = io.BytesIO()
    sf.write(buffer, g711.to_float(payload, law), g711.SAMPLE_RATE, format="WAV", subtype=subtype)
    uploaded = audio.decode(buffer.getvalue(), 16000, max_seconds=60)
    raw = soxr.resample(g711.to_float(payload, law), g711.SAMPLE_RATE, 16000)
    assert len(uploaded) == len(raw) == 32000
    assert np.max(np.abs(uploaded - raw)) < 1e-3
