"""Import a Hugging Face ``Wav2Vec2ForCTC`` / ``HubertForCTC`` checkpoint as an artifact.

These models take the raw waveform: the artifact declares the ``waveform`` front end (the
runtime feeds ``audio_signal`` float32 ``[N, samples]``, normalised per utterance when the
feature extractor's ``do_normalize`` is set, and ``length`` in samples). HF puts the CTC blank
(the pad token) at its own index, usually 0; the export moves it last, as contract 2 wants, and
the word delimiter ``|`` becomes ``▁``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from kubescribe_runtime.manifest import WaveformFrontend, sha256_file
from torch import nn

from kubescribe_modeling.artifact import ExportReport, write_manifest
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.onnx_export import export_onnx, parity, quantize_int8, set_metadata
from kubescribe_modeling.vocab import WORD_BOUNDARY, tokens_file_text

PARITY_THRESHOLD = 1e-3
SUPPORTED = ("Wav2Vec2ForCTC", "HubertForCTC")


def blank_last_order(vocab_size: int, blank: int) -> list[int]:
    """Output permutation that moves ``blank`` to the end, keeping the other ids in order."""
    if not 0 <= blank < vocab_size:
        raise ModelingError(f"blank id {blank} outside a vocabulary of {vocab_size}")
    return [i for i in range(vocab_size) if i != blank] + [blank]


def hf_tokens(vocab: dict[str, int], order: list[int], delimiter: str) -> list[str]:
    """Token symbols in the new order, blank excluded; the word delimiter becomes ``▁``."""
    by_id = {i: t for t, i in vocab.items()}
    missing = [i for i in order if i not in by_id]
    if missing:
        raise ModelingError(f"vocab.json has no token for ids {missing[:5]}")
    return [WORD_BOUNDARY if by_id[i] == delimiter else by_id[i] for i in order[:-1]]


class _BlankLast(nn.Module):
    """``(audio_signal [N, S], length [N]) -> (logprobs [N, T', V], lengths)``, blank last."""

    def __init__(self, model: nn.Module, order: list[int], use_attention_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.use_attention_mask = use_attention_mask
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    order: torch.Tensor

    def forward(
        self, audio_signal: torch.Tensor, length: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(audio_signal.shape[1], device=audio_signal.device)
        valid = positions[None, :] < length[:, None]
        # Samples past ``length`` are padding: zero them (HF pads with zeros too).
        audio_signal = audio_signal * valid.to(audio_signal.dtype)
        mask = valid.long() if self.use_attention_mask else None
        logits = self.model(audio_signal, attention_mask=mask).logits
        logits = torch.index_select(logits, 2, self.order)
        out_lengths: torch.Tensor = self.model._get_feat_extract_output_lengths(length)  # type: ignore[operator]
        return torch.log_softmax(logits, dim=-1), out_lengths


def _load(hf_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    try:
        config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelingError(f"{hf_dir}: no config.json (not a Hugging Face model folder)") from exc
    architectures = config.get("architectures") or []
    arch = next((a for a in architectures if a in SUPPORTED), None)
    if arch is None:
        raise ModelingError(
            f"{hf_dir}: architectures {architectures} are not supported "
            f"(expected one of {', '.join(SUPPORTED)})"
        )
    import transformers

    cls = getattr(transformers, arch)
    model = cls.from_pretrained(str(hf_dir), attn_implementation="eager")
    model.eval()
    return model, config


def import_hf_ctc(
    hf_dir: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    int8: bool = False,
    language: str = "en",
) -> ExportReport:
    """``language`` goes into the manifest: it picks the text normaliser that scores the model."""
    model, config = _load(hf_dir)
    try:
        vocab: dict[str, int] = json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelingError(f"{hf_dir}: no vocab.json (the CTC tokenizer's vocabulary)") from exc
    tokenizer_cfg_path = hf_dir / "tokenizer_config.json"
    tokenizer_cfg = (
        json.loads(tokenizer_cfg_path.read_text(encoding="utf-8"))
        if tokenizer_cfg_path.exists()
        else {}
    )
    delimiter = str(tokenizer_cfg.get("word_delimiter_token", "|"))
    feature_cfg_path = hf_dir / "preprocessor_config.json"
    feature_cfg = (
        json.loads(feature_cfg_path.read_text(encoding="utf-8"))
        if feature_cfg_path.exists()
        else {}
    )
    vocab_size = int(config["vocab_size"])
    blank = int(config.get("pad_token_id", 0) or 0)
    order = blank_last_order(vocab_size, blank)
    tokens = hf_tokens(vocab, order, delimiter)
    subsampling = math.prod([int(s) for s in config.get("conv_stride", [])])
    use_mask = config.get("feat_extract_norm") == "layer"
    wrapper = _BlankLast(model, order, use_mask).eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([16000, 11200])
    audio = torch.randn(2, 16000, generator=gen) * 0.1
    audio[1, 11200:] = 0.0
    onnx_path = out_dir / "model.onnx"
    export_onnx(wrapper, onnx_path, (audio, lengths), time_axis_name="samples")
    set_metadata(
        onnx_path,
        {
            "vocab_size": len(tokens) + 1,
            "subsampling_factor": subsampling,
            "model_type": config.get("model_type", "wav2vec2"),
            "frontend": "waveform",
            "model_author": "kubescribe import",
        },
    )
    # Parity on one utterance at a time: "group"-norm models see padding by design.
    diff = 0.0
    for i in range(len(lengths)):
        n = int(lengths[i])
        single = (audio[i : i + 1, :n], lengths[i : i + 1])
        with torch.no_grad():
            _, out_len = wrapper(*single)
        diff = max(diff, parity(wrapper, onnx_path, single, out_len, PARITY_THRESHOLD))
    text = tokens_file_text(tokens)
    (out_dir / "tokens.txt").write_text(text, encoding="utf-8")
    (out_dir / "vocab.txt").write_text(text, encoding="utf-8")
    if int8:
        quantize_int8(onnx_path, out_dir / "model.int8.onnx")
    write_manifest(
        out_dir,
        name=name or hf_dir.name,
        version=version,
        vocab_size=len(tokens),
        subsampling_factor=subsampling,
        frontend=WaveformFrontend(normalize=bool(feature_cfg.get("do_normalize", True))),
        model_type=str(config.get("architectures", [SUPPORTED[0]])[0]),
        evaluation=[],
        description=f"imported from Hugging Face {hf_dir.name}",
        languages=[language],
    )
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    return ExportReport(out_dir=out_dir, parity_max_abs_diff=diff, files=files)
