"""ITU-T G.711 telephone audio: μ-law (``audio/pcmu``) and A-law (``audio/pcma``), 8 kHz.

Decoding and encoding are table lookups built once with numpy (``audioop`` left the standard
library in Python 3.13). Linear samples are 16-bit, scaled as ITU-T G.191 and libsndfile scale
them: μ-law spans ±32124, A-law ±32256. :func:`to_float` gives float32 in [-1, 1) for the
pipeline.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
Law = Literal["pcmu", "pcma"]

_BIAS = 0x84  # μ-law bias (132) in 16-bit units
_ULAW_CLIP_14BIT = 8159
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit
    mask = np.where(linear < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(linear), _ULAW_CLIP_14BIT) + (_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)  # first end >= magnitude
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(linear >= 0, 0xD5, 0x55)
    magnitude = np.where(linear >= 0, linear, -linear - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((magnitude >> shift) & 0x0F)
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


_DECODE: dict[str, npt.NDArray[np.int16]] = {
    "pcmu": _ulaw_decode_table(),
    "pcma": _alaw_decode_table(),
}
_ENCODE: dict[str, npt.NDArray[np.uint8]] = {
    "pcmu": _ulaw_encode_table(),
    "pcma": _alaw_encode_table(),
}
for _decode_table in _DECODE.values():
    _decode_table.setflags(write=False)
for _encode_table in _ENCODE.values():
    _encode_table.setflags(write=False)


def _law(law: str) -> Law:
    if law not in _DECODE:
        raise ValueError(f"unknown G.711 law {law!r}: expected 'pcmu' (μ-law) or 'pcma' (A-law)")
    return law  # type: ignore[return-value]


def decode(payload: bytes, law: Law) -> npt.NDArray[np.int16]:
    """One byte per sample in, 16-bit linear samples out."""
    codes = np.frombuffer(payload, dtype=np.uint8)
    return _DECODE[_law(law)][codes]


def encode(samples: npt.NDArray[np.int16], law: Law) -> bytes:
    """16-bit linear samples in, one byte per sample out."""
    linear = np.asarray(samples, dtype=np.int16).astype(np.int32) + 32768
    return _ENCODE[_law(law)][linear].tobytes()


def to_float(payload: bytes, law: Law) -> npt.NDArray[np.float32]:
    """Decoded samples as float32 in [-1, 1), as libsndfile reads 16-bit PCM."""
    return decode(payload, law).astype(np.float32) / np.float32(32768.0)


def from_float(samples: npt.NDArray[np.floating], law: Law) -> bytes:
    """Encode float samples in [-1, 1] (clipped), for tests and benchmarks."""
    scaled = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767)
    return encode(scaled.astype(np.int16), law)
