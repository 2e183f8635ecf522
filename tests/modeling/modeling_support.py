"""Helpers for the modeling tests: a tiny tone "speech" corpus and a tiny configuration.

Each word is one pitch: enough to exercise training and export in seconds. The real demo
model is tested on real (synthesised) speech in ``test_modeling_interop.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from kubescribe_modeling.config import TrainConfig

WORDS = ("hello", "world", "yes", "no", "stop", "go")
TINY_MODEL = {
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "ff_dim": 64,
    "subsampling_channels": 16,
    "conv_kernel": 7,
    "dropout": 0.0,
}


def _tone_utterance(words: list[str], rng: np.random.Generator) -> np.ndarray:
    parts = []
    for word in words:
        freq = 200 + 120 * WORDS.index(word)
        n = int(rng.integers(3200, 4800))
        parts.append(0.3 * np.sin(2 * np.pi * freq * np.arange(n) / 16000))
        parts.append(np.zeros(800))
    signal = np.concatenate(parts) + rng.normal(0, 0.01, sum(len(p) for p in parts))
    return signal.astype(np.float32)


def write_corpus(root: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        lines = []
        for i in range(count):
            words = [WORDS[j] for j in rng.integers(0, len(WORDS), 3)]
            audio = f"wav/{split}-{i}.wav"
            sf.write(root / audio, _tone_utterance(words, rng), 16000)
            source = "template" if i % 2 else "independent"
            lines.append(json.dumps({"audio": audio, "text": " ".join(words), "source": source}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_config(corpus: Path, out_dir: Path, **overrides: object) -> TrainConfig:
    data: dict[str, object] = {
        "corpus": str(corpus),
        "out_dir": str(out_dir),
        "model": TINY_MODEL,
        "epochs": 2,
        "batch_frames": 2400,
        "warmup_steps": 2,
        "lr": 3e-3,
        "threads": 1,
    }
    data.update(overrides)
    return TrainConfig.model_validate(data)
