"""User-facing failures of the modeling toolkit (mapped to one line by the CLI dispatcher)."""

from __future__ import annotations

from kubescribe.errors import KubescribeError


class ModelingError(KubescribeError):
    """A modeling command cannot proceed (bad input file, bad configuration)."""


class ConfigError(ModelingError):
    """A training configuration file is missing or invalid."""


class CheckpointError(ModelingError):
    """A checkpoint is missing or unreadable."""


class ParityError(ModelingError):
    """The exported ONNX model does not reproduce the torch model."""

    exit_code = 3
