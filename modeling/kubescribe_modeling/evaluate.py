"""Word error rate of an artifact on a test set (``manifest.jsonl`` + audio).

The decoding path is the artifact's own: features (the runtime's numpy NeMo log-mel, or the raw
normalised waveform for a ``waveform`` front end), onnxruntime, greedy CTC over ``tokens.txt``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kubescribe_modeling.dataset import SAMPLE_RATE, read_audio, read_manifest
from kubescribe_modeling.decode import greedy_ids, word_error_rate
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.vocab import BLANK_SYMBOL, tokens_to_text

Transcriber = Callable[[Sequence[npt.NDArray[np.float32]]], list[str]]


@dataclass
class EvalReport:
    wer: float
    utterances: int
    audio_seconds: float
    compute_seconds: float
    by_source: dict[str, float] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0


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
    """Batch-of-one transcription through onnxruntime with the artifact's front end."""
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

    def transcribe(waves: Sequence[npt.NDArray[np.float32]]) -> list[str]:
        out = []
        for wave in waves:
            feats, length = inputs(wave)
            (logprobs,) = session.run(
                ["logprobs"],
                {"audio_signal": feats, "length": np.array([length], dtype=np.int64)},
            )
            ids = greedy_ids(logprobs[0], logprobs.shape[1], blank)
            out.append(tokens_to_text(tokens[i] for i in ids))
        return out

    return transcribe


def evaluate(
    transcriber: Transcriber, testset: Path, normalize: Callable[[str], str] | None = None
) -> EvalReport:
    """Transcribe every utterance of ``testset/manifest.jsonl``; WER overall and per source."""
    from kubescribe_modeling.text import normalize_text

    norm = normalize or normalize_text
    utterances = read_manifest(testset / "manifest.jsonl")
    if not utterances:
        raise ModelingError(f"{testset}: the test set is empty")
    waves = [read_audio(u.audio) for u in utterances]
    started = time.perf_counter()
    hyps = transcriber(waves)
    compute = time.perf_counter() - started
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
        audio_seconds=sum(len(w) for w in waves) / SAMPLE_RATE,
        compute_seconds=compute,
        by_source=by_source,
        references=refs,
        hypotheses=hyps,
    )


def evaluate_artifact(artifact: Path, testset: Path, model_file: str = "model.onnx") -> EvalReport:
    if not (artifact / model_file).is_file():
        raise ModelingError(f"{artifact}: no {model_file}")
    return evaluate(onnx_transcriber(artifact, model_file), testset)
