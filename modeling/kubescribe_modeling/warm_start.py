"""Warm starts: a training checkpoint recovered from an exported artifact.

The example models ship as artifacts (ONNX), not torch checkpoints. The exporter traces
:class:`~kubescribe_modeling.model.ConformerCTC` with named parameters, so every weight is an
initializer of ``model.onnx``: most keep their ``model.<name>`` (convolutions, norms, biases);
each linear layer's weight becomes an anonymous, transposed ``MatMul`` operand, found through
the ``Add`` of its ``model.<layer>.bias``. The sizes follow from the shapes; the head count,
which no shape shows, is the one whose torch output reproduces onnxruntime's.

``kubescribe train --init examples/models/demo`` starts from the shipped English model this way
(:func:`load_init`): encoder, vocabulary and CTC head. A Spanish model keeps the English
character head: the Spanish normaliser folds accents and ``ñ`` (``text_lang``), so both
languages write ``▁ a-z '`` and the English rows are a better start than random ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kubescribe_modeling.checkpoint import Checkpoint, VocabSpec, load_checkpoint
from kubescribe_modeling.config import ModelConfig
from kubescribe_modeling.errors import CheckpointError
from kubescribe_modeling.model import ConformerCTC
from kubescribe_modeling.vocab import BLANK_SYMBOL

__all__ = ["checkpoint_from_artifact", "load_init"]

_PREFIX = "model."
#: torch-vs-onnxruntime difference (log-probabilities) below which a head count is the one
PARITY = 1e-3


def _initializers(model: object) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _state_dict(model: object) -> dict[str, torch.Tensor]:
    """Named initializers, plus each ``MatMul`` weight named after the bias added to it."""
    values = _initializers(model)
    graph = model.graph  # type: ignore[attr-defined]
    consumers: dict[str, list[object]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {
        k.removeprefix(_PREFIX): torch.from_numpy(v.copy())
        for k, v in values.items()
        if k.startswith(_PREFIX)
    }
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in values:
            continue
        if node.input[1].startswith(_PREFIX):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]  # type: ignore[attr-defined]
        biases = [i for n in adds for i in n.input if i.startswith(_PREFIX) and i.endswith(".bias")]  # type: ignore[attr-defined]
        if len(biases) != 1:
            raise CheckpointError(f"MatMul {node.name!r}: no single bias names its layer")
        layer = biases[0].removeprefix(_PREFIX).removesuffix(".bias")
        state[f"{layer}.weight"] = torch.from_numpy(values[node.input[1]].T.copy())
    return state


def _sizes(state: dict[str, torch.Tensor], n_mels: int, n_heads: int) -> ModelConfig:
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    ff_dims = [int(state[f"blocks.{i}.ff1.linear1.weight"].shape[0]) for i in layers]
    return ModelConfig(
        n_mels=n_mels,
        d_model=int(state["head.weight"].shape[1]),
        n_layers=len(layers),
        n_heads=n_heads,
        ff_dim=ff_dims[0],
        ff_dims=None if len(set(ff_dims)) == 1 else ff_dims,
        conv_kernel=int(state["blocks.0.conv.depthwise.weight"].shape[-1]),
        subsampling_channels=int(state["subsampling.conv1.weight"].shape[0]),
        dropout=0.1,
    )


def _tokens(artifact: Path) -> list[str]:
    lines = (artifact / "tokens.txt").read_text(encoding="utf-8").splitlines()
    tokens = [line.rsplit(" ", 1)[0] for line in lines if line.strip()]
    return [t for t in tokens if t != BLANK_SYMBOL]


def _matches(model: ConformerCTC, path: Path) -> bool:
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, model.cfg.n_mels, 120, generator=gen)
    lengths = torch.tensor([120, 83])
    with torch.no_grad():
        expected, out_lengths = model(feats, lengths)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"audio_signal": feats.numpy(), "length": lengths.numpy()})
    diff = max(
        float(np.abs(got[i, :n] - expected[i, :n].numpy()).max())
        for i, n in enumerate(out_lengths.tolist())
    )
    return diff < PARITY


def checkpoint_from_artifact(artifact: Path) -> Checkpoint:
    """The torch checkpoint of a kubescribe-exported character model (``model.onnx``)."""
    import onnx

    path = artifact / "model.onnx"
    if not path.is_file():
        raise CheckpointError(f"{artifact}: no model.onnx to recover weights from")
    tokens = _tokens(artifact)
    if any(len(t) != 1 for t in tokens):
        raise CheckpointError(
            f"{artifact}: only character vocabularies can be recovered "
            "(a BPE artifact does not carry its sentencepiece model)"
        )
    graph = onnx.load(str(path))
    state = _state_dict(graph)
    n_mels = int(graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    if n_mels <= 0:
        raise CheckpointError(f"{artifact}: model.onnx has no fixed feature size")
    d_model = int(state["head.weight"].shape[1])
    for n_heads in (4, 8, 2, 1, 16, *range(3, d_model + 1)):
        if d_model % n_heads:
            continue
        cfg = _sizes(state, n_mels, n_heads)
        model = ConformerCTC(cfg, len(tokens))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{artifact}: not a kubescribe Conformer-CTC ({exc})") from exc
        model.eval()
        if _matches(model, path):
            recovered = {"recovered_from": str(artifact), "n_heads": n_heads}
            return Checkpoint(cfg, VocabSpec("char", tokens), model.state_dict(), recovered)
    raise CheckpointError(f"{artifact}: no head count reproduces model.onnx")


def load_init(path: Path) -> Checkpoint:
    """``--init``: a checkpoint file, or an exported artifact directory."""
    if path.is_dir():
        return checkpoint_from_artifact(path)
    return load_checkpoint(path)
