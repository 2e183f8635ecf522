"""The table of malformed (and unusual but valid) transcription requests, shared by the tone
model's server test and the demo model's end-to-end test."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests
import soundfile as sf
import soxr
from rt_server import post

Sample = Callable[[], tuple[np.ndarray, int]]
Send = Callable[[str], requests.Response]


@dataclass(frozen=True)
class Case:
    name: str
    send: Send  # takes the server's base URL
    status: int
    code: str | None = None  # the error code; None: a correct transcript of the sample
    message: str = ""


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def cases(sample: Sample, max_audio_seconds: int, max_upload_mb: float) -> list[Case]:
    """Every upload is made only when its case runs (not at collection)."""

    def wav() -> bytes:
        return encode(*sample(), subtype="PCM_16")

    def patched(data_size: int, riff_size: int | None = None) -> bytes:
        data = bytearray(wav())
        if riff_size is not None:
            data[4:8] = struct.pack("<I", riff_size)
        at = data.find(b"data")
        data[at + 4 : at + 8] = struct.pack("<I", data_size)
        return bytes(data)

    def float_wav_with(value: float) -> bytes:
        samples, rate = sample()
        samples = samples.copy()
        samples[len(samples) // 2 : len(samples) // 2 + 10] = value
        return encode(samples, rate, subtype="FLOAT")

    def resampled(rate: int, channels: int = 1) -> bytes:
        samples, original = sample()
        out = soxr.resample(samples, original, rate).astype(np.float32)
        if channels > 1:
            out = np.stack([out * (0.5 + 0.5 * i / channels) for i in range(channels)], axis=1)
        return encode(out, rate, subtype="PCM_16")

    def file(make: Callable[[], bytes], name: str = "a.wav", **form: str) -> Send:
        return lambda url: post(url, make(), name, **form)

    def raw(method: str = "POST", path: str = "/v1/audio/transcriptions", **kw: object) -> Send:
        return lambda url: requests.request(method, url + path, timeout=60, **kw)  # type: ignore[arg-type]

    too_long = (max_audio_seconds + 60) * 8000
    tiny_claim = max_audio_seconds - 10  # seconds: within the limit, beyond the size's allowance
    oversized = int((max_upload_mb + 0.5) * 1024 * 1024)
    granularity = "timestamp_granularities[]"
    return [
        Case("zero bytes", file(lambda: b""), 400, "empty_audio", "empty"),
        Case(
            "text file", file(lambda: b"not audio\n" * 99, "a.txt"), 415, "unsupported_audio_format"
        ),
        Case(
            "pdf",
            file(lambda: b"%PDF-1.4\n" + bytes(2000), "a.pdf"),
            415,
            "unsupported_audio_format",
        ),
        Case("truncated header", file(lambda: wav()[:30]), 400, "unreadable_audio", "truncated"),
        Case("header without data", file(lambda: wav()[:44]), 400, "empty_audio", "no samples"),
        Case("data size zero", file(lambda: patched(0)), 400, "empty_audio"),
        Case("flac magic, garbage", file(lambda: b"fLaC" + bytes(500)), 400, "unreadable_audio"),
        Case(
            "mp3 sync, garbage",
            file(lambda: b"\xff\xfb\x90\x00" + bytes(3000)),
            400,
            "unreadable_audio",
        ),
        Case("NaN samples", file(lambda: float_wav_with(np.nan)), 400, "invalid_samples", "NaN"),
        Case(
            "inf samples", file(lambda: float_wav_with(np.inf)), 400, "invalid_samples", "infinite"
        ),
        Case(
            "one sample",
            file(lambda: encode(np.zeros(1, np.float32), 16000)),
            400,
            "audio_too_short",
        ),
        Case(
            "longer than the limit",
            file(lambda: encode(np.zeros(too_long, np.int16), 8000, subtype="PCM_U8")),
            400,
            "audio_too_long",
            f"the limit is {max_audio_seconds} s",
        ),
        Case(
            # a few kilobytes of FLAC silence that would decode to most of the limit
            "a tiny file claiming minutes",
            file(lambda: encode(np.zeros(tiny_claim * 8000, np.float32), 8000, "FLAC", "PCM_16")),
            400,
            "audio_too_long",
            "an upload of this size may hold at most",
        ),
        Case(
            "sample rate below 8 kHz",
            file(lambda: encode(np.zeros(4000, np.float32), 4000)),
            400,
            "unsupported_sample_rate",
        ),
        Case("oversized upload", file(lambda: bytes(oversized)), 413, "file_too_large"),
        Case(
            "missing file",
            raw(data={"model": "x"}, files={"other": ("x", b"1")}),
            400,
            "missing_file",
        ),
        Case(
            "file as a text field",
            raw(data={"file": "abc"}, files={"x": ("x", b"1")}),
            400,
            "missing_file",
        ),
        Case("JSON body", raw(json={"file": "a.wav"}), 415, "unsupported_content_type"),
        Case(
            "raw audio body",
            raw(data=b"RIFF", headers={"Content-Type": "audio/wav"}),
            415,
            "unsupported_content_type",
        ),
        Case(
            "unknown response_format",
            file(wav, response_format="docx"),
            400,
            "invalid_response_format",
        ),
        Case(
            "temperature above 1",
            file(wav, temperature="1.5"),
            400,
            "invalid_temperature",
        ),
        Case("temperature not a number", file(wav, temperature="warm"), 400, "invalid_temperature"),
        Case(
            "unknown granularity",
            file(wav, response_format="verbose_json", **{granularity: "phoneme"}),
            400,
            "invalid_timestamp_granularities",
        ),
        Case(
            "granularity without verbose_json",
            file(wav, **{granularity: "word"}),
            400,
            "invalid_timestamp_granularities",
        ),
        Case("unsupported language", file(wav, language="xx"), 400, "unsupported_language"),
        Case("GET", raw(method="GET"), 405, "method_not_allowed"),
        Case("unknown route", raw(path="/v1/audio/translations"), 404, "not_found"),
        # Unusual but valid: the right answer is the transcript.
        Case("8 kHz", file(lambda: resampled(8000)), 200),
        Case("48 kHz stereo", file(lambda: resampled(48000, channels=2)), 200),
        Case("44.1 kHz 6 channels", file(lambda: resampled(44100, channels=6)), 200),
        Case("OGG Vorbis", file(lambda: encode(*sample(), fmt="OGG", subtype="VORBIS")), 200),
        Case("MP3", file(lambda: encode(*sample(), fmt="MP3", subtype="MPEG_LAYER_III")), 200),
        Case("header declares more data", file(lambda: patched(0x7FFFFFF0, 0x7FFFFFF8)), 200),
    ]


def run(url: str, table: list[Case], correct: Callable[[str], bool]) -> list[str]:
    """Send every case; return what went wrong (empty when every answer was right)."""
    failures = []
    for case in table:
        answer = case.send(url)
        problem = None
        if answer.status_code != case.status:
            problem = f"status {answer.status_code}: {answer.text[:200]}"
        elif case.code is not None:
            error = answer.json()["error"]
            if set(error) != {"message", "type", "param", "code"} or not error["message"]:
                problem = f"error shape {error}"
            elif error["code"] != case.code or case.message not in error["message"]:
                problem = f"error {error}"
        elif not correct(answer.json()["text"]):
            problem = f"transcript {answer.json()['text']!r}"
        if problem:
            failures.append(f"{case.name}: {problem}")
    return failures
