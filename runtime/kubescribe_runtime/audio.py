"""Decode uploaded audio (WAV, FLAC, OGG, MP3, … through libsndfile) into mono float32 blocks at
the model's sample rate, streaming: memory stays bounded by the block size whatever the length.

Every way an upload can be wrong raises an :class:`AudioError` whose ``status`` is the HTTP
status the API answers with.

Bounded cost: a declared sample rate outside :data:`MIN_SAMPLE_RATE`–:data:`MAX_SAMPLE_RATE` is
refused, and so is audio that decodes to more than ``max_seconds_per_mb`` seconds per megabyte
of upload (at least :data:`MIN_ALLOWANCE_S`): a tiny file cannot claim hours of compute.

Several channels are mixed to one so that a phase-inverted pair (the same voice on both
channels, one of them inverted) does not cancel out: :func:`downmix`. Or one channel is taken
alone (``channel``), for recordings with one speaker per channel.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from kubescribe.errors import KubescribeError

# Shorter audio cannot yield a single output frame of a CTC model: refused as too short.
MIN_AUDIO_SECONDS = 0.1
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# However small the upload, this much audio is allowed.
MIN_ALLOWANCE_S = 30.0
_MB = 1024 * 1024
# A channel this anti-correlated with the loudest is inverted before the mix.
_INVERTED_CORRELATION = -0.5
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


class UnsupportedSampleRate(AudioError):
    code = "unsupported_sample_rate"


class InvalidChannel(AudioError):
    code = "invalid_channel"


def seconds_allowed(size_bytes: int, max_seconds: float, max_seconds_per_mb: float) -> float:
    """The most audio an upload of ``size_bytes`` may decode to (``max_seconds_per_mb`` 0: no
    bound per megabyte)."""
    if max_seconds_per_mb <= 0:
        return max_seconds
    return min(max_seconds, max(MIN_ALLOWANCE_S, max_seconds_per_mb * size_bytes / _MB))


def downmix(chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``[frames, channels]`` → mono: the mean, after inverting every channel strongly
    anti-correlated with the loudest one (a plain mean cancels a phase-inverted pair)."""
    if chunk.shape[1] == 1:
        return np.ascontiguousarray(chunk[:, 0])
    energy = np.einsum("ij,ij->j", chunk, chunk, dtype=np.float64)
    reference = int(np.argmax(energy))
    cross = chunk[:, reference].astype(np.float64) @ chunk.astype(np.float64)
    scale = np.sqrt(energy[reference] * energy)
    correlation = np.divide(cross, scale, out=np.zeros_like(cross), where=scale > 0)
    signs = np.where(correlation < _INVERTED_CORRELATION, -1.0, 1.0).astype(np.float32)
    return (chunk @ signs / np.float32(chunk.shape[1])).astype(np.float32)


def _size(data: bytes | IO[bytes]) -> int:
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data)
    here = data.tell()
    end = data.seek(0, io.SEEK_END)
    data.seek(here)
    return int(end)


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


def _open(data: bytes | IO[bytes]) -> sf.SoundFile:
    """``data``: the bytes, or a seekable file (a spooled upload: read from the start)."""
    if isinstance(data, bytes | bytearray | memoryview):
        source: IO[bytes] = io.BytesIO(data)
    else:
        source = data
        source.seek(0)
    if not source.read(1):
        raise EmptyAudio("the uploaded file is empty (0 bytes)")
    source.seek(0)
    try:
        return sf.SoundFile(source)
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


def probe(
    data: bytes | IO[bytes], max_seconds: float, max_seconds_per_mb: float = 0.0
) -> AudioInfo:
    """Read the header only and refuse what cannot be served."""
    limit = seconds_allowed(_size(data), max_seconds, max_seconds_per_mb)
    with _open(data) as handle:
        info = AudioInfo(
            format=str(handle.format),
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            frames=int(handle.frames),
        )
    _check_info(info, limit, max_seconds)
    return info


def _too_long(seconds: float, limit: float, max_seconds: float, declared: bool) -> AudioTooLong:
    length = f"{seconds:.1f} s long" if declared else f"longer than {limit:g} s"
    if limit < max_seconds:
        reason = f"an upload of this size may hold at most {limit:g} s (seconds per megabyte)"
    else:
        reason = f"the limit is {max_seconds:g} s"
    return AudioTooLong(f"the audio is {length}; {reason}")


def _check_info(info: AudioInfo, limit: float, max_seconds: float) -> None:
    if info.sample_rate <= 0:
        raise UnreadableAudio(f"unreadable audio: invalid sample rate {info.sample_rate}")
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRate(
            f"unsupported sample rate {info.sample_rate} Hz; "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz are served"
        )
    if not 1 <= info.channels <= _MAX_CHANNELS:
        raise UnreadableAudio(f"unreadable audio: invalid channel count {info.channels}")
    if info.frames <= 0:
        raise EmptyAudio("the audio contains no samples")
    if info.duration_s > limit:
        raise _too_long(info.duration_s, limit, max_seconds, declared=True)


def iter_mono(
    data: bytes | IO[bytes],
    target_rate: int,
    max_seconds: float,
    max_seconds_per_mb: float = 0.0,
    channel: int | None = None,
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield mono float32 blocks resampled to ``target_rate``; raise on invalid content.

    Validation happens while streaming (the header may lie): non-finite samples, more audio
    than declared beyond the limit, or less than :data:`MIN_AUDIO_SECONDS` in total.
    ``channel``: that channel alone (0-based) instead of the mix of all.
    """
    limit = seconds_allowed(_size(data), max_seconds, max_seconds_per_mb)
    handle = _open(data)
    with handle:
        info = AudioInfo(
            str(handle.format), int(handle.samplerate), int(handle.channels), int(handle.frames)
        )
        _check_info(info, limit, max_seconds)
        if channel is not None and not 0 <= channel < info.channels:
            raise InvalidChannel(
                f"channel {channel} does not exist: the audio has {info.channels} channel(s)"
            )
        resampler = (
            None
            if info.sample_rate == target_rate
            else soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32")
        )
        block = max(1, int(_BLOCK_SECONDS * info.sample_rate))
        seen = 0
        try:
            for chunk in handle.blocks(blocksize=block, dtype="float32", always_2d=True):
                seen += chunk.shape[0]
                if seen / info.sample_rate > limit:
                    raise _too_long(seen / info.sample_rate, limit, max_seconds, declared=False)
                if not np.isfinite(chunk).all():
                    raise InvalidSamples("the audio contains NaN or infinite samples")
                mono = (
                    downmix(chunk) if channel is None else np.ascontiguousarray(chunk[:, channel])
                )
                out = mono if resampler is None else resampler.resample_chunk(mono)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
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
