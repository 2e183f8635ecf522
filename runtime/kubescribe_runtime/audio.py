"""Decode uploaded audio (WAV, FLAC, OGG, MP3, … through libsndfile) into mono float32 blocks at
the model's sample rate, streaming: memory stays bounded by the block size whatever the length.

Every way an upload can be wrong raises an :class:`AudioError` whose ``status`` is the HTTP
status the API answers with.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from kubescribe.errors import KubescribeError

# Shorter audio cannot yield a single output frame of a CTC model: refused as too short.
MIN_AUDIO_SECONDS = 0.1
_BLOCK_SECONDS = 2.0
_MAX_CHANNELS = 64


class AudioError(KubescribeError):
    status = 400
    code = "invalid_audio"


class EmptyAudio(AudioError):
    code = "empty_audio"


class UnreadableAudio(AudioError):
    code = "unreadable_audio"


class UnsupportedAudio(AudioError):
    status = 415
    code = "unsupported_audio_format"


class AudioTooLong(AudioError):
    code = "audio_too_long"


class AudioTooShort(AudioError):
    code = "audio_too_short"


class InvalidSamples(AudioError):
    code = "invalid_samples"


@dataclass(frozen=True)
class AudioInfo:
    format: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _unreadable(detail: str) -> str:
    if "does not exist" in detail:  # libsndfile's words for a stream it cannot parse
        detail = "no decodable audio stream"
    return f"unreadable audio: the file is corrupted or truncated ({detail})"


def _open(data: bytes) -> sf.SoundFile:
    if not data:
        raise EmptyAudio("the uploaded file is empty (0 bytes)")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as exc:
        message = str(exc.error_string).rstrip(".")
        if "not recognised" in message.lower() or "unknown format" in message.lower():
            raise UnsupportedAudio(
                "unsupported audio format: not a WAV, FLAC, OGG/Vorbis/Opus or MP3 file "
                f"({message})"
            ) from exc
        raise UnreadableAudio(_unreadable(message)) from exc
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UnreadableAudio(f"unreadable audio: {exc}") from exc


def probe(data: bytes, max_seconds: float) -> AudioInfo:
    """Read the header only and refuse what cannot be served."""
    with _open(data) as handle:
        info = AudioInfo(
            format=str(handle.format),
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            frames=int(handle.frames),
        )
    _check_info(info, max_seconds)
    return info


def _check_info(info: AudioInfo, max_seconds: float) -> None:
    if info.sample_rate <= 0:
        raise UnreadableAudio(f"unreadable audio: invalid sample rate {info.sample_rate}")
    if not 1 <= info.channels <= _MAX_CHANNELS:
        raise UnreadableAudio(f"unreadable audio: invalid channel count {info.channels}")
    if info.frames <= 0:
        raise EmptyAudio("the audio contains no samples")
    if info.duration_s > max_seconds:
        raise AudioTooLong(
            f"the audio is {info.duration_s:.1f} s long; the limit is {max_seconds:g} s"
        )


def iter_mono(
    data: bytes, target_rate: int, max_seconds: float
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield mono float32 blocks resampled to ``target_rate``; raise on invalid content.

    Validation happens while streaming (the header may lie): non-finite samples, more audio
    than declared beyond the limit, or less than :data:`MIN_AUDIO_SECONDS` in total.
    """
    handle = _open(data)
    with handle:
        info = AudioInfo(
            str(handle.format), int(handle.samplerate), int(handle.channels), int(handle.frames)
        )
        _check_info(info, max_seconds)
        resampler = (
            None
            if info.sample_rate == target_rate
            else soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32")
        )
        block = max(1, int(_BLOCK_SECONDS * info.sample_rate))
        seen = 0
        produced = 0
        try:
            for chunk in handle.blocks(blocksize=block, dtype="float32", always_2d=True):
                seen += chunk.shape[0]
                if seen / info.sample_rate > max_seconds:
                    raise AudioTooLong(f"the audio is longer than the limit of {max_seconds:g} s")
                if not np.isfinite(chunk).all():
                    raise InvalidSamples("the audio contains NaN or infinite samples")
                mono = chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0]
                out = mono if resampler is None else resampler.resample_chunk(mono)
                produced += len(out)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                produced += len(tail)
                if len(tail):
                    yield np.ascontiguousarray(tail, dtype=np.float32)
        except sf.LibsndfileError as exc:
            raise UnreadableAudio(_unreadable(str(exc.error_string))) from exc
        if seen == 0:
            raise EmptyAudio("the audio contains no samples")
        if seen / info.sample_rate < MIN_AUDIO_SECONDS:
            raise AudioTooShort(
                f"the audio is {1000 * seen / info.sample_rate:.1f} ms long; "
                f"at least {1000 * MIN_AUDIO_SECONDS:g} ms are needed"
            )


def decode(data: bytes, target_rate: int, max_seconds: float) -> npt.NDArray[np.float32]:
    """The whole waveform at once (short audio, tests)."""
    blocks = list(iter_mono(data, target_rate, max_seconds))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
