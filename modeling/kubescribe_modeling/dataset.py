"""Training data: corpus manifests, a feature cache, length-bucketed batches and SpecAugment.

Features are NeMo log-mels computed once per utterance by the runtime's own numpy front end
(``kubescribe_runtime.features``) and cached as float16 in one ``.npz`` per split, which is far
cheaper on a small CPU than recomputing them every epoch. Waveform augmentation (noise, gain,
reverb) happens when the corpus is synthesised; SpecAugment happens here, per batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from kubescribe_runtime.features import log_mel
from kubescribe_runtime.manifest import NemoLogMelFrontend

from kubescribe_modeling.config import SpecAugmentConfig
from kubescribe_modeling.errors import ModelingError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str
    source: str = ""
    voice: str = ""


def read_manifest(path: Path) -> list[Utterance]:
    """Lines ``{"audio": path relative to the manifest's folder, "text", ...}``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ModelingError(f"{path}: manifest not found") from exc
    utterances = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = Path(row["audio"])
            utterances.append(
                Utterance(
                    audio=audio if audio.is_absolute() else path.parent / audio,
                    text=str(row["text"]),
                    source=str(row.get("source", "")),
                    voice=str(row.get("voice", "")),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelingError(f"{path}:{number}: bad manifest line ({exc})") from exc
    return utterances


def read_audio(path: Path) -> npt.NDArray[np.float32]:
    """A mono float32 waveform at 16 kHz."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ModelingError(f"{path}: cannot read audio ({exc})") from exc
    mono = data.mean(axis=1).astype(np.float32)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    return mono


@dataclass
class FeatureSet:
    """Cached features of one split: ``features[i]`` is ``[n_mels, frames_i]`` float16."""

    features: list[npt.NDArray[np.float16]]
    texts: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def frames(self) -> npt.NDArray[np.int64]:
        return np.array([f.shape[1] for f in self.features], dtype=np.int64)


def featurize(utterance: Utterance, frontend: NemoLogMelFrontend) -> npt.NDArray[np.float32]:
    """Valid frames only: ``[n_mels, num_samples // hop]``."""
    wave = read_audio(utterance.audio)
    feats = log_mel(wave, frontend, SAMPLE_RATE)
    return feats[:, : max(len(wave) // frontend.hop_length, 1)]


def _featurize_half(utterance: Utterance, frontend: NemoLogMelFrontend) -> npt.NDArray[np.float16]:
    return featurize(utterance, frontend).astype(np.float16)


def load_features(
    manifest: Path,
    cache_dir: Path,
    frontend: NemoLogMelFrontend,
    normalize: bool = True,
    progress: bool = True,
    workers: int = 1,
    language: str = "en",
) -> FeatureSet:
    """Features of every utterance of ``manifest``, computed once (in ``workers`` processes)
    and cached; transcripts through ``language``'s normaliser."""
    from tqdm import tqdm

    from kubescribe_modeling.text_lang import normalizer

    utterances = read_manifest(manifest)
    key = hashlib.sha256(manifest.read_bytes() + frontend.model_dump_json().encode()).hexdigest()
    cache = cache_dir / f"{manifest.stem}-{key[:16]}.npz"
    norm = normalizer(language)
    texts = [norm(u.text) if normalize else u.text for u in utterances]
    sources = [u.source for u in utterances]
    if cache.exists():
        with np.load(cache) as data:
            flat, offsets = data["features"], data["offsets"]
        cached = [flat[:, offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return FeatureSet(cached, texts, sources)
    work = partial(_featurize_half, frontend=frontend)
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(work, utterances, chunksize=32) if pool else map(work, utterances)
        desc = f"features {manifest.name}"
        feats = list(tqdm(results, total=len(utterances), desc=desc, disable=not progress))
    offsets = np.concatenate([[0], np.cumsum([f.shape[1] for f in feats])]).astype(np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, features=np.concatenate(feats, axis=1), offsets=offsets)
    tmp.replace(cache)
    return FeatureSet(feats, texts, sources)


def make_batches(
    frames: Sequence[int], batch_frames: int, rng: random.Random | None = None
) -> list[list[int]]:
    """Group indices of similar length so that ``len(batch) * longest <= batch_frames``.

    With ``rng`` the order inside length buckets and the batch order are shuffled.
    """
    order = sorted(range(len(frames)), key=lambda i: frames[i])
    if rng is not None:
        # Shuffle within coarse length buckets so that batches differ between epochs.
        keyed = [(frames[i] // 50, rng.random(), i) for i in order]
        order = [i for _, _, i in sorted(keyed)]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, frames[i])
        if current and longest_if * (len(current) + 1) > batch_frames:
            batches.append(current)
            current, longest_if = [], frames[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(
    features: Sequence[npt.NDArray[np.floating]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``[N, n_mels, T_max]`` float32 and lengths ``[N]`` int64."""
    lengths = torch.tensor([f.shape[1] for f in features], dtype=torch.long)
    batch = torch.zeros(len(features), features[0].shape[0], int(lengths.max()))
    for i, f in enumerate(features):
        batch[i, :, : f.shape[1]] = torch.from_numpy(np.asarray(f, dtype=np.float32))
    return batch, lengths


def spec_augment(
    batch: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """Zero random frequency bands and time spans (in place on a copy)."""
    out = batch.clone()
    n, n_mels, _ = out.shape
    for i in range(n):
        for _ in range(cfg.freq_masks):
            width = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(n_mels - width, 1), (1,), generator=gen))
            out[i, start : start + width, :] = 0.0
        length = int(lengths[i])
        max_width = int(cfg.time_width * length)
        for _ in range(cfg.time_masks):
            width = int(torch.randint(0, max_width + 1, (1,), generator=gen))
            start = int(torch.randint(0, max(length - width, 1), (1,), generator=gen))
            out[i, :, start : start + width] = 0.0
    return out


def iterate(
    data: FeatureSet, batches: Sequence[Sequence[int]]
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    for indices in batches:
        feats, lengths = collate([data.features[i] for i in indices])
        yield list(indices), feats, lengths
