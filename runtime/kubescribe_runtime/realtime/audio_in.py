"""Appended audio → mono float32 at the model's rate, streaming (one resampler per session, so
chunk edges leave no trace). Formats: ``audio/pcm`` (16-bit little-endian PCM at 24 kHz) and
G.711 ``audio/pcmu`` / ``audio/pcma`` at 8 kHz (:mod:`kubescribe_runtime.g711`).
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import numpy.typing as npt
import soxr

from kubescribe_runtime import g711
from kubescribe_runtime.realtime.events import ProtocolError
from kubescribe_runtime.realtime.session_config import InputFormat

INPUT_RATES: dict[str, int] = {"pcm16": 24000, "pcmu": g711.SAMPLE_RATE, "pcma": g711.SAMPLE_RATE}
BYTES_PER_SAMPLE: dict[str, int] = {"pcm16": 2, "pcmu": 1, "pcma": 1}


def b64_decoded_size(text: str) -> int:
    """Bytes that ``text`` decodes to (an upper bound for malformed text)."""
    return len(text) * 3 // 4


def decode_base64(text: str, event_id: str | None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            "invalid_base64", f"audio is not valid base64: {exc}", param="audio", event_id=event_id
        ) from exc


class InputAudio:
    """Decoder and resampler for one session's input format."""

    def __init__(self, fmt: InputFormat, target_rate: int) -> None:
        self.format = fmt
        self.input_rate = INPUT_RATES[fmt]
        self.target_rate = target_rate
        self._resampler = self._new_resampler()

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self.input_rate == self.target_rate:
            return None
        return soxr.ResampleStream(self.input_rate, self.target_rate, 1, dtype="float32")

    def flush(self) -> npt.NDArray[np.float32]:
        """The samples the resampler still holds (its delay: tens of milliseconds), so that a
        commit takes all the audio appended before it; the stream starts afresh after."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler = self._new_resampler()
        return np.ascontiguousarray(tail, dtype=np.float32)

    def input_seconds(self, payload: bytes) -> float:
        return len(payload) / BYTES_PER_SAMPLE[self.format] / self.input_rate

    def samples(self, payload: bytes, event_id: str | None = None) -> npt.NDArray[np.float32]:
        """One append's bytes → float32 at the target rate (lags the input by the resampler's
        delay until :meth:`flush`)."""
        if not payload:
            raise ProtocolError(
                "empty_audio", "the append holds no audio", param="audio", event_id=event_id
            )
        if self.format == "pcm16":
            if len(payload) % 2:
                raise ProtocolError(
                    "invalid_audio_length",
                    f"audio/pcm is 16-bit: the append holds an odd number of bytes "
                    f"({len(payload)})",
                    param="audio",
                    event_id=event_id,
                )
            wave = np.frombuffer(payload, dtype="<i2").astype(np.float32) / np.float32(32768.0)
        else:
            wave = g711.to_float(payload, self.format)
        if self._resampler is None:
            return wave
        return np.ascontiguousarray(self._resampler.resample_chunk(wave), dtype=np.float32)
