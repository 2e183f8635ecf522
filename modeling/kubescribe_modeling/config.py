"""Configuration of the acoustic model and of a training run (pydantic, loaded from YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kubescribe.errors import validation_problems
from kubescribe_modeling.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """Sizes of a Conformer-CTC. ``ff_dims`` overrides ``ff_dim`` per block (set by pruning)."""

    n_mels: int = Field(80, gt=0)
    d_model: int = Field(144, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    ff_dim: int = Field(576, gt=0)
    ff_dims: list[int] | None = None
    conv_kernel: int = Field(15, gt=0)
    subsampling_channels: int = Field(144, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if self.ff_dims is not None and len(self.ff_dims) != self.n_layers:
            raise ValueError(f"ff_dims needs {self.n_layers} entries, got {len(self.ff_dims)}")
        return self

    def block_ff_dims(self) -> list[int]:
        return list(self.ff_dims) if self.ff_dims is not None else [self.ff_dim] * self.n_layers


class SpecAugmentConfig(_Strict):
    freq_masks: int = Field(2, ge=0)
    freq_width: int = Field(15, ge=0)
    time_masks: int = Field(5, ge=0)
    time_width: float = Field(0.05, ge=0.0, le=1.0, description="fraction of the utterance")


class VocabConfig(_Strict):
    kind: Literal["char", "bpe"] = "char"
    bpe_size: int = Field(128, gt=0)


class DistillConfig(_Strict):
    teacher: Path | None = None
    weight: float = Field(0.5, ge=0.0, le=1.0, description="share of the KL term in the loss")
    temperature: float = Field(1.0, gt=0.0)


class TrainConfig(_Strict):
    """A training run: data, model sizes, optimisation, budget."""

    corpus: Path = Path("data/corpus")
    language: str = Field("en", description="transcripts' language: picks the text normaliser")
    dev_manifest: Path | None = Field(
        None, description="model selection on this manifest instead of CORPUS/dev.jsonl"
    )
    out_dir: Path = Path("runs/demo")
    cache_dir: Path | None = None
    model: ModelConfig = Field(default_factory=lambda: ModelConfig.model_validate({}))
    vocab: VocabConfig = Field(default_factory=lambda: VocabConfig.model_validate({}))
    specaugment: SpecAugmentConfig = Field(
        default_factory=lambda: SpecAugmentConfig.model_validate({})
    )
    distill: DistillConfig = Field(default_factory=lambda: DistillConfig.model_validate({}))
    epochs: int = Field(30, gt=0)
    max_minutes: float | None = Field(None, gt=0, description="stop training after this time")
    batch_frames: int = Field(12000, gt=0, description="feature frames per batch (padded)")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    warmup_steps: int = Field(300, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    dev_utterances: int = Field(300, gt=0, description="dev utterances scored each epoch")
    eval_every_minutes: float | None = Field(
        None, gt=0, description="also score dev (and keep best.pt) this often within an epoch"
    )
    max_train_utterances: int | None = Field(None, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0)
    feature_workers: int = Field(1, gt=0, description="processes that fill the feature cache")


def parse_setting(text: str) -> tuple[list[str], object]:
    """``KEY=VALUE`` (``KEY`` may be dotted, ``VALUE`` is YAML) from ``--set``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), parsed


def _apply_setting(data: dict[str, object], path: list[str], value: object) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a mapping")
        node = child
    node[path[-1]] = value


def load_config(
    path: Path,
    overrides: dict[str, object] | None = None,
    settings: list[str] | None = None,
) -> TrainConfig:
    """Read a YAML training configuration; ``overrides`` are top-level keys set on top,
    ``settings`` are ``KEY=VALUE`` strings (dotted keys reach into sections)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: configuration file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.update(overrides or {})
    for setting in settings or []:
        _apply_setting(data, *parse_setting(setting))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc
