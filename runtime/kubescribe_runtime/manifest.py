"""Contract 2: the artifact manifest `kubescribe.yaml`, shared by the writer (modeling) and the
reader (runtime, fetch). Pure data: no I/O beyond parsing and dumping text.

The ONNX file itself follows NeMo's CTC layout (inputs `audio_signal`, `length`; output
`logprobs`, blank last), so the same directory also loads in sherpa-onnx and onnx-asr.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kubescribe.errors import KubescribeError, validation_problems

MANIFEST_NAME = "kubescribe.yaml"
MANIFEST_SCHEMA: Literal["kubescribe.io/artifact/v1"] = "kubescribe.io/artifact/v1"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]


class ManifestError(KubescribeError):
    """The manifest is missing, unparsable or does not follow the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NemoLogMelFrontend(_Strict):
    """NeMo's AudioToMelSpectrogramPreprocessor, as real NeMo CTC checkpoints were trained on."""

    type: Literal["nemo-logmel"] = "nemo-logmel"
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    window: Literal["hann"] = "hann"
    preemph: float = 0.97
    log_zero_guard: float = 2.0**-24
    normalize: Literal["per_feature"] = "per_feature"
    mel_norm: Literal["slaney"] = "slaney"


class WaveformFrontend(_Strict):
    """Raw waveform in (wav2vec2/HuBERT): the model does its own feature extraction.

    The ONNX input `audio_signal` is then float32 [N, T] samples; `length` is in samples.
    """

    type: Literal["waveform"] = "waveform"
    normalize: bool = True  # zero-mean unit-variance per utterance (Wav2Vec2FeatureExtractor)


Frontend = Annotated[NemoLogMelFrontend | WaveformFrontend, Field(discriminator="type")]


class Evaluation(_Strict):
    """A result the artifact was released with, on a named test set.

    ``speech`` says whether the test set is recorded human speech or synthesised, ``channel``
    how it reached the model (e.g. ``telephone 8 kHz``, ``wideband 16 kHz``), ``language`` its
    language: a synthetic figure must not pass for what real callers get."""

    test_set: str
    wer: float = Field(ge=0)
    utterances: int = Field(ge=0)
    model_file: str = "model.onnx"
    speech: Literal["real", "synthetic"] | None = None
    channel: str = ""
    language: str = ""


class ReferenceClip(_Strict):
    """One reference clip: an audio file of the artifact (also listed in ``files``, so fetched
    and verified like every other file) and its expected transcript."""

    path: str = Field(min_length=1, description="relative to the artifact, e.g. reference/1.flac")
    sha256: Sha256
    text: str = Field(min_length=1, description="the expected transcript, normalised")


class ReferenceSet(_Strict):
    """The quality gate's clips (a few short ones from the model's test set, never trained on)
    and the WER the model scored on them when it was written: per model file, measured through
    the runtime's pipeline and :func:`kubescribe_runtime.quality_gate.reference_wer`."""

    test_set: str = Field(min_length=1, description="where the clips come from")
    clips: list[ReferenceClip] = Field(min_length=1, max_length=64)
    wer: dict[str, float] = Field(
        min_length=1, description="model file -> WER on the clips at export (the declared WER)"
    )


class ArtifactManifest(_Strict):
    schema_: Literal["kubescribe.io/artifact/v1"] = Field(MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    model_type: str = "EncDecCTCModelBPE"
    sample_rate: int = Field(16000, gt=0)
    frontend: Frontend = Field(default_factory=NemoLogMelFrontend)
    subsampling_factor: int = Field(4, ge=1)
    vocab_size: int = Field(gt=0, description="tokens without the blank; blank id = vocab_size")
    files: dict[str, Sha256] = Field(min_length=1, description="file name -> sha256 hex")
    evaluation: list[Evaluation] = Field(default_factory=list)
    description: str = ""
    reference: ReferenceSet | None = Field(
        default=None, description="the quality gate's reference clips (optional)"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _reference_clips_are_files(self) -> ArtifactManifest:
        # The clips travel as artifact files: fetched and verified with the rest.
        for clip in self.reference.clips if self.reference else []:
            if self.files.get(clip.path) != clip.sha256:
                raise ValueError(
                    f"reference clip {clip.path!r} must be listed in files with its sha256"
                )
        return self

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        if data["reference"] is None:  # an artifact without clips reads as it always did
            del data["reference"]
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = MANIFEST_NAME) -> ArtifactManifest:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a mapping at the top level")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(f"{source}: {validation_problems(exc)}") from exc

    @classmethod
    def load(cls, directory: Path) -> ArtifactManifest:
        path = directory / MANIFEST_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ManifestError(f"{path}: artifact manifest not found") from exc
        return cls.from_yaml(text, str(path))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
