"""Checkpoints: the model's sizes, its vocabulary and weights in one self-contained file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kubescribe_modeling.config import ModelConfig
from kubescribe_modeling.errors import CheckpointError
from kubescribe_modeling.model import ConformerCTC
from kubescribe_modeling.vocab import BpeVocabulary, CharVocabulary, Vocabulary


@dataclass
class VocabSpec:
    """How to rebuild a vocabulary: the token list, plus the sentencepiece model for BPE."""

    kind: str
    tokens: list[str]
    bpe_model: bytes | None = None

    def build(self, scratch: Path | None = None) -> Vocabulary:
        if self.kind == "char":
            return CharVocabulary(self.tokens)
        if self.bpe_model is None:
            raise CheckpointError("BPE vocabulary without its sentencepiece model")
        import tempfile

        folder = Path(tempfile.mkdtemp()) if scratch is None else scratch
        path = folder / "bpe.model"
        path.write_bytes(self.bpe_model)
        return BpeVocabulary(path)


@dataclass
class Checkpoint:
    model_config: ModelConfig
    vocab: VocabSpec
    state_dict: dict[str, torch.Tensor]
    training: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> ConformerCTC:
        model = ConformerCTC(self.model_config, len(self.vocab.tokens))
        model.load_state_dict(self.state_dict)
        model.eval()
        return model


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically (a crash mid-write never leaves a broken checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "kubescribe-conformer-ctc/1",
        "model_config": checkpoint.model_config.model_dump(mode="json"),
        "vocab": {
            "kind": checkpoint.vocab.kind,
            "tokens": list(checkpoint.vocab.tokens),
            "bpe_model": checkpoint.vocab.bpe_model,
        },
        "state_dict": checkpoint.state_dict,
        "training": checkpoint.training,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: checkpoint not found") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "kubescribe-conformer-ctc/1":
        raise CheckpointError(f"{path}: not a kubescribe Conformer-CTC checkpoint")
    vocab = payload["vocab"]
    return Checkpoint(
        model_config=ModelConfig.model_validate(payload["model_config"]),
        vocab=VocabSpec(vocab["kind"], list(vocab["tokens"]), vocab.get("bpe_model")),
        state_dict=payload["state_dict"],
        training=dict(payload.get("training") or {}),
    )
