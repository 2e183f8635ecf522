"""Word error rate of an artifact on a test set (``manifest.jsonl`` + audio files).

By default the audio goes through the runtime's own pipeline (``kubescribe_runtime``: decode,
resample, window, features, ONNX, CTC), so the number is what a deployment would get. Where the
runtime is not installed, a minimal path does the same steps: the runtime's numpy NeMo log-mel
(or the normalised waveform for a ``waveform`` front end), onnxruntime and greedy CTC.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kubescribe_modeling.dataset import SAMPLE_RATE, read_audio, read_manifest
from kubescribe_modeling.decode import greedy_ids, word_error_rate
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.vocab import BLANK_SYMBOL, tokens_to_text

#: Audio files in, transcripts out.
Transcriber = Callable[[Sequence[Path]], list[str]]


@dataclass
class EvalReport:
    wer: float
    utterances: int
    audio_seconds: float
    compute_seconds: float
    pipeline: str = ""
    by_source: dict[str, float] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time over audio time (lower is faster)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0


def manifest_path(testset: Path) -> Path:
    """A test set is a folder with ``manifest.jsonl``, or a ``.jsonl`` manifest itself."""
    return testset if testset.suffix == ".jsonl" else testset / "manifest.jsonl"


def read_tokens(path: Path) -> list[str]:
    tokens: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            symbol, _, index = line.rpartition(" ")
            tokens[int(index)] = symbol
    return [tokens[i] for i in range(len(tokens))]


def onnx_transcriber(
    artifact: Path, model_file: str = "model.onnx", threads: int = 1
) -> Transcriber:
    """One utterance at a time through onnxruntime, with the artifact's front end."""
    import onnxruntime as ort
    from kubescribe_runtime.features import log_mel, num_frames
    from kubescribe_runtime.manifest import ArtifactManifest, NemoLogMelFrontend

    manifest = ArtifactManifest.load(artifact)
    tokens = read_tokens(artifact / "tokens.txt")
    if tokens[-1] != BLANK_SYMBOL:
        raise ModelingError(f"{artifact}/tokens.txt: the last token must be {BLANK_SYMBOL}")
    blank = len(tokens) - 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(artifact / model_file), options, providers=["CPUExecutionProvider"]
    )
    frontend = manifest.frontend

    def inputs(wave: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], int]:
        if isinstance(frontend, NemoLogMelFrontend):
            return log_mel(wave, frontend, SAMPLE_RATE)[None], num_frames(len(wave), frontend)
        w = wave.astype(np.float32)
        if frontend.normalize:
            w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
        return w[None].astype(np.float32), len(w)

    def transcribe(paths: Sequence[Path]) -> list[str]:
        out = []
        for path in paths:
            feats, length = inputs(read_audio(path))
            (logprobs,) = session.run(
                ["logprobs"],
                {"audio_signal": feats, "length": np.array([length], dtype=np.int64)},
            )
            ids = greedy_ids(logprobs[0], logprobs.shape[1], blank)
            out.append(tokens_to_text(tokens[i] for i in ids))
        return out

    return transcribe


def runtime_transcriber(
    artifact: Path, model_file: str = "model.onnx", threads: int = 1, vad: str | None = None
) -> Transcriber | None:
    """The runtime's pipeline (batch size 1; its default voice activity detection unless
    ``vad`` says otherwise), or ``None`` where the runtime is not installed."""
    try:
        from kubescribe_runtime.config import ServeConfig
        from kubescribe_runtime.service import build_transcriber
    except ImportError:
        return None
    settings: dict[str, Any] = {
        "model_dir": artifact, "model_file": model_file, "threads": threads, "max_batch_size": 1
    }  # fmt: skip
    if vad is not None:
        settings["vad"] = vad
    config = ServeConfig.model_validate(settings)

    def transcribe(paths: Sequence[Path]) -> list[str]:
        pipeline = build_transcriber(config)
        try:
            return [pipeline.transcribe(path.read_bytes()).text for path in paths]
        finally:
            pipeline.batcher.close()

    return transcribe


def evaluate(
    transcriber: Transcriber,
    testset: Path,
    pipeline: str = "",
    normalize: Callable[[str], str] | None = None,
) -> EvalReport:
    """Transcribe every utterance of ``testset/manifest.jsonl``; WER overall and per source.

    References and hypotheses go through the same ``normalize`` (English by default)."""
    from kubescribe_modeling.text import normalize_text

    norm = normalize or normalize_text
    utterances = read_manifest(manifest_path(testset))
    if not utterances:
        raise ModelingError(f"{testset}: the test set is empty")
    missing = [str(u.audio) for u in utterances if not u.audio.is_file()]
    if missing:
        raise ModelingError(f"{testset}: audio files missing: {', '.join(missing[:3])}")
    started = time.perf_counter()
    hyps = transcriber([u.audio for u in utterances])
    compute = time.perf_counter() - started
    import soundfile as sf

    audio_seconds = sum(sf.info(str(u.audio)).duration for u in utterances)
    refs = [norm(u.text) for u in utterances]
    hyps = [norm(h) for h in hyps]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(utterances):
        groups[u.source or "all"].append(i)
    by_source = {
        source: word_error_rate([refs[i] for i in idx], [hyps[i] for i in idx])
        for source, idx in sorted(groups.items())
    }
    return EvalReport(
        wer=word_error_rate(refs, hyps),
        utterances=len(utterances),
        audio_seconds=audio_seconds,
        compute_seconds=compute,
        pipeline=pipeline,
        by_source=by_source,
        references=refs,
        hypotheses=hyps,
    )


def artifact_normalizer(artifact: Path) -> Callable[[str], str]:
    """The text normaliser of the artifact's (first) language."""
    from kubescribe_runtime.manifest import ArtifactManifest

    from kubescribe_modeling.text_lang import normalizer

    return normalizer(ArtifactManifest.load(artifact).languages[0])


def describe_testset(testset: Path) -> dict[str, Any]:
    """What a test set is (``testset.json`` beside its manifest: name, language, ``speech``
    real or synthetic, ``channel``); a folder without one is a synthetic set of its own name."""
    path = manifest_path(testset).parent / "testset.json"
    if path.is_file():
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return info
    return {"name": str(testset), "speech": "synthetic"}


def evaluate_artifact(
    artifact: Path,
    testset: Path,
    model_file: str = "model.onnx",
    use_runtime: bool = True,
    vad: str | None = None,
) -> EvalReport:
    """WER of ``artifact`` on ``testset``: through the runtime's pipeline as a deployment runs
    it (``vad="off"`` drops its voice activity detection, which the plain path lacks), or the
    plain onnxruntime path."""
    if not (artifact / model_file).is_file():
        raise ModelingError(f"{artifact}: no {model_file}")
    norm = artifact_normalizer(artifact)
    transcriber = runtime_transcriber(artifact, model_file, vad=vad) if use_runtime else None
    if transcriber is not None:
        return evaluate(transcriber, testset, pipeline="kubescribe-runtime", normalize=norm)
    return evaluate(
        onnx_transcriber(artifact, model_file), testset, pipeline="onnxruntime", normalize=norm
    )
