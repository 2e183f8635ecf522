"""espeak-ng synthesis at 16 kHz mono (the I/O edge of the data toolkit)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import soxr

from kubescribe.errors import KubescribeError

__all__ = [
    "SAMPLE_RATE",
    "SynthesisError",
    "espeak_data_dir",
    "espeak_version",
    "parse_wav",
    "read_variant",
    "require_espeak",
    "synthesize",
]

SAMPLE_RATE = 16_000


class SynthesisError(KubescribeError):
    """espeak-ng is missing or failed."""


def require_espeak() -> str:
    """Path of the espeak-ng binary, or a clear error saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise SynthesisError(
            "espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu)"
        )
    return path


def espeak_version() -> str:
    """espeak-ng's version line (recorded with every corpus: voices change between versions)."""
    proc = subprocess.run(
        [require_espeak(), "--version"], capture_output=True, timeout=30, check=False
    )
    return proc.stdout.decode(errors="replace").strip()


def espeak_data_dir() -> Path:
    """espeak-ng's data folder, as its ``--version`` line names it (``Data at: PATH``)."""
    _, sep, path = espeak_version().partition("Data at:")
    if not sep or not path.strip():
        raise SynthesisError("espeak-ng --version does not name its data folder")
    return Path(path.strip())


def read_variant(name: str) -> str:
    """The text of espeak-ng's voice variant file ``voices/!v/NAME``."""
    path = espeak_data_dir() / "voices" / "!v" / name
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SynthesisError(f"espeak-ng has no voice variant {name!r} ({path})") from exc


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode espeak-ng's 16-bit mono WAV from stdout (its size fields are not filled in)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthesisError("espeak-ng did not produce a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            channels, rate, bits = (
                struct.unpack("<H", data[body + 2 : body + 4])[0],
                struct.unpack("<I", data[body + 4 : body + 8])[0],
                struct.unpack("<H", data[body + 14 : body + 16])[0],
            )
            if channels != 1 or bits != 16:
                raise SynthesisError(f"unexpected espeak-ng format: {channels} ch, {bits} bit")
        elif chunk == b"data":
            pcm = data[body:]
            pcm = pcm[: len(pcm) - len(pcm) % 2]
            return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, rate
        pos = body + size + (size & 1)
    raise SynthesisError("espeak-ng WAV stream has no data chunk")


def synthesize(text: str, voice: str, speed: int, pitch: int, timeout: float = 60.0) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float32 mono audio at :data:`SAMPLE_RATE`."""
    cmd = [require_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"]
    try:
        proc = subprocess.run(
            cmd, input=text.encode(), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"espeak-ng timed out on {text[:40]!r}") from exc
    if proc.returncode != 0:
        raise SynthesisError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode()[:200]}")
    audio, rate = parse_wav(proc.stdout)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    return audio.astype(np.float32)
