"""ONNX export in NeMo's CTC layout, metadata, torch-vs-onnxruntime parity, int8 quantisation.

The graph has inputs ``audio_signal`` float32 ``[N, 80, T]`` and ``length`` int64 ``[N]`` and
one output ``logprobs`` float32 ``[N, T', V+1]`` (log-softmax, blank last), with dynamic batch
and time axes: what sherpa-onnx's and onnx-asr's NeMo CTC loaders run.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from kubescribe_modeling.errors import ParityError

OPSET = 17
INPUT_NAMES = ("audio_signal", "length")
OUTPUT_NAME = "logprobs"


class _LogProbsOnly(nn.Module):
    """The acoustic model with one output, as NeMo's exported CTC models have."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        logprobs, _ = self.model(audio_signal, length)
        out: torch.Tensor = logprobs
        return out


def export_onnx(
    model: nn.Module,
    path: Path,
    example: tuple[torch.Tensor, torch.Tensor],
    time_axis_name: str = "time",
) -> None:
    """Trace ``model(audio_signal, length) -> (logprobs, lengths)`` to ``path``."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LogProbsOnly(model),
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "audio_signal": {0: "batch", example[0].dim() - 1: time_axis_name},
                "length": {0: "batch"},
                OUTPUT_NAME: {0: "batch", 1: "frames"},
            },
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def set_metadata(path: Path, metadata: Mapping[str, object]) -> None:
    """Replace the ONNX model's metadata (``metadata_props``) with ``metadata``."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def run_onnx(
    path: Path, audio_signal: npt.NDArray[np.float32], length: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {"audio_signal": audio_signal, "length": length})
    return np.asarray(out, dtype=np.float32)


def parity(
    model: nn.Module,
    path: Path,
    inputs: tuple[torch.Tensor, torch.Tensor],
    out_lengths: torch.Tensor,
    threshold: float,
) -> float:
    """Max |torch - onnxruntime| log-prob over valid output frames; raises above ``threshold``."""
    model.eval()
    with torch.no_grad():
        expected = _LogProbsOnly(model)(*inputs).numpy()
    got = run_onnx(path, inputs[0].numpy(), inputs[1].numpy())
    if got.shape != expected.shape:
        raise ParityError(f"ONNX output shape {got.shape} != torch {expected.shape}")
    diff = 0.0
    for i, n in enumerate(out_lengths.tolist()):
        diff = max(diff, float(np.abs(got[i, :n] - expected[i, :n]).max(initial=0.0)))
    if not diff <= threshold:
        raise ParityError(
            f"{path.name}: torch and onnxruntime differ by {diff:.3g} (> {threshold:g})"
        )
    return diff


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantisation (int8 weights of MatMul/Gemm), metadata kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    metadata = read_metadata(source)
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    set_metadata(target, metadata)
