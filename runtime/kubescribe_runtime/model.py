"""The acoustic model: an onnxruntime session over the artifact, and its front end.

Front ends (from the manifest):
- ``nemo-logmel``: input ``audio_signal`` float32 [N, n_mels, T] and ``length`` [N] in frames;
- ``waveform``: input ``audio_signal`` float32 [N, samples] and ``length`` [N] in samples
  (imported wav2vec2/HuBERT models), normalised per utterance when the manifest says so.
The output ``logprobs`` is [N, T', V+1] with the blank last. One output frame lasts
``subsampling_factor`` feature frames (``nemo-logmel``: × hop_length / sample_rate, 40 ms for a
factor of 4) or ``subsampling_factor`` samples (``waveform``: the product of the model's
convolution strides, as ``kubescribe import`` writes it; 320 samples = 20 ms for wav2vec2).

Session options (:class:`SessionSettings`): intra-op threads default to the container's CPU quota
(:mod:`kubescribe_runtime.cpu`), not the node's cores; worker threads do not spin while waiting
for work (spinning burns the CPU quota that batches need, and the batcher leaves gaps between
batches); on CUDA, cuDNN picks convolution algorithms by heuristic instead of an exhaustive
search (every batch has another shape: each new shape would be benchmarked again), the CUDA
arena can be capped (``gpu_mem_limit_mb``), and batches run through IO binding (the output is
copied straight into host memory) — on CPU, where there is no copy to save, plainly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from kubescribe.errors import KubescribeError
from kubescribe_runtime import cpu
from kubescribe_runtime.artifact import Artifact
from kubescribe_runtime.features import log_mel, num_frames
from kubescribe_runtime.manifest import ArtifactManifest, NemoLogMelFrontend, WaveformFrontend

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelUnavailable(KubescribeError):
    """The model cannot be served as configured (e.g. CUDA asked for and missing)."""


@dataclass(frozen=True)
class ModelInput:
    array: npt.NDArray[np.float32]  # [n_mels, T] features or [samples] waveform
    length: int  # valid frames or samples


@dataclass(frozen=True)
class SessionSettings:
    threads: int = 0  # intra-op threads; 0: the container's CPU quota
    spinning: bool = False  # let idle intra-op threads spin
    cudnn_conv_algo_search: Literal["heuristic", "exhaustive", "default"] = "heuristic"
    gpu_mem_limit_mb: int = 0  # the CUDA arena's cap; 0: none
    io_binding: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA only


def session_options(settings: SessionSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads or cpu.default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    spin = "1" if settings.spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def cuda_options(gpu_id: int, settings: SessionSettings) -> dict[str, str]:
    """The CUDA execution provider's options."""
    options = {
        "device_id": str(gpu_id),
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search.upper(),
        # Grow the arena by what is asked for, not in doubling chunks (shapes vary per batch).
        "arena_extend_strategy": "kSameAsRequested",
    }
    if settings.gpu_mem_limit_mb > 0:
        options["gpu_mem_limit"] = str(settings.gpu_mem_limit_mb * 1024 * 1024)
    return options


def choose_providers(
    device: str,
    gpu_id: int,
    allow_cpu_fallback: bool,
    available: Sequence[str],
    settings: SessionSettings | None = None,
) -> tuple[list[str | tuple[str, dict[str, str]]], str | None]:
    """Execution providers for ``device``; the second item is a warning when falling back."""
    if device == "cpu":
        return [CPU], None
    if CUDA in available:
        return [(CUDA, cuda_options(gpu_id, settings or SessionSettings())), CPU], None
    reason = (
        f"device=gpu but onnxruntime offers no {CUDA} (available: {', '.join(available)}); "
        "install the 'gpu' extra and run on a node with an NVIDIA GPU"
    )
    if not allow_cpu_fallback:
        raise ModelUnavailable(reason)
    return [CPU], reason + "; serving on CPU (--allow-cpu-fallback)"


def frame_seconds(manifest: ArtifactManifest) -> float:
    frontend = manifest.frontend
    if isinstance(frontend, NemoLogMelFrontend):
        return frontend.hop_length / manifest.sample_rate * manifest.subsampling_factor
    return manifest.subsampling_factor / manifest.sample_rate


def _within(
    times: npt.NDArray[np.float64], regions: Sequence[tuple[float, float]]
) -> npt.NDArray[np.bool_]:
    inside = np.zeros(len(times), dtype=bool)
    for start, end in regions:
        inside |= (times >= start) & (times < end)
    return inside


def prepare(
    samples: npt.NDArray[np.float32],
    manifest: ArtifactManifest,
    stats_regions: Sequence[tuple[float, float]] | None = None,
) -> ModelInput:
    """One window of 16 kHz (the model's rate) mono samples → the model's input.

    ``stats_regions`` (seconds): take the normalisation statistics from these stretches only
    (the speech of a window with long non-speech); ``None``: from the whole window.
    """
    frontend = manifest.frontend
    rate = manifest.sample_rate
    if isinstance(frontend, NemoLogMelFrontend):
        mask = None
        if stats_regions is not None:
            frames = num_frames(len(samples), frontend) + 1
            mask = _within(np.arange(frames) * frontend.hop_length / rate, stats_regions)
        return ModelInput(
            log_mel(samples, frontend, rate, stats_frames=mask), num_frames(len(samples), frontend)
        )
    assert isinstance(frontend, WaveformFrontend)
    wave = samples.astype(np.float32)
    if frontend.normalize:
        basis = wave
        if stats_regions is not None:
            chosen = wave[_within(np.arange(len(wave)) / rate, stats_regions)]
            basis = chosen if len(chosen) > 1 else wave
        wave = ((wave - basis.mean()) / np.sqrt(basis.var() + 1e-7)).astype(np.float32)
    return ModelInput(wave, len(wave))


def pad_batch(
    inputs: Sequence[ModelInput],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Zero-pad along the last (time) axis."""
    longest = max(item.array.shape[-1] for item in inputs)
    shape = (len(inputs), *inputs[0].array.shape[:-1], longest)
    batch = np.zeros(shape, dtype=np.float32)
    for i, item in enumerate(inputs):
        batch[i, ..., : item.array.shape[-1]] = item.array
    return batch, np.array([item.length for item in inputs], dtype=np.int64)


def output_lengths(
    manifest: ArtifactManifest, lengths: npt.NDArray[np.int64], padded: int, out_frames: int
) -> list[int]:
    """Valid output frames of each batch item."""
    if isinstance(manifest.frontend, NemoLogMelFrontend):
        sub = manifest.subsampling_factor
        result = [math.ceil(int(n) / sub) for n in lengths]
    else:  # the model's own convolutional front end: proportional share of the output
        result = [math.ceil(int(n) * out_frames / max(padded, 1)) for n in lengths]
    return [max(0, min(out_frames, n)) for n in result]


class AcousticModel:
    """An onnxruntime session; ``infer`` runs one padded batch."""

    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        gpu_id: int = 0,
        allow_cpu_fallback: bool = False,
        threads: int = 0,
        session: SessionSettings | None = None,
    ) -> None:
        self.artifact = artifact
        self.manifest = artifact.manifest
        settings = session or SessionSettings(threads=threads)
        providers, warning = choose_providers(
            device, gpu_id, allow_cpu_fallback, ort.get_available_providers(), settings
        )
        if warning:
            log.warning(warning)
        options = session_options(settings)
        self.threads = options.intra_op_num_threads
        try:
            self.session = ort.InferenceSession(
                str(artifact.model_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise ModelUnavailable(f"{artifact.model_path}: cannot load: {exc}") from exc
        active = self.session.get_providers()
        if device == "gpu" and CUDA not in active and not allow_cpu_fallback:
            raise ModelUnavailable(
                f"device=gpu but the CUDA provider failed to initialise (active: {active})"
            )
        self.providers = active
        self.device = "gpu" if CUDA in active else "cpu"
        self.io_binding = settings.io_binding == "on" or (
            settings.io_binding == "auto" and self.device == "gpu"
        )
        names = {i.name for i in self.session.get_inputs()}
        if not {"audio_signal", "length"} <= names:
            raise ModelUnavailable(
                f"{artifact.model_path}: inputs {sorted(names)}; expected audio_signal and length"
            )
        self.frame_seconds = frame_seconds(self.manifest)

    def infer(self, inputs: Sequence[ModelInput]) -> list[npt.NDArray[np.float32]]:
        """Per item, the ``[T'_i, V+1]`` log-probabilities of its valid frames."""
        batch, lengths = pad_batch(inputs)
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input("audio_signal", batch)
            binding.bind_cpu_input("length", lengths)
            binding.bind_output("logprobs", "cpu")
            self.session.run_with_iobinding(binding)
            (logprobs,) = binding.copy_outputs_to_cpu()
        else:
            (logprobs,) = self.session.run(["logprobs"], {"audio_signal": batch, "length": lengths})
        keep = output_lengths(self.manifest, lengths, batch.shape[-1], logprobs.shape[1])
        return [np.array(logprobs[i, :n], dtype=np.float32) for i, n in enumerate(keep)]
