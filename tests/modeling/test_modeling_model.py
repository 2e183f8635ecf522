from __future__ import annotations

import pytest
import torch
from kubescribe_modeling.config import ModelConfig
from kubescribe_modeling.model import ConformerCTC, count_parameters, subsampled_lengths
from modeling_support import TINY_MODEL
from pydantic import ValidationError


def _model(**overrides: object) -> ConformerCTC:
    torch.manual_seed(0)
    return ConformerCTC(ModelConfig.model_validate({**TINY_MODEL, **overrides}), 28).eval()


@pytest.mark.parametrize(("frames", "expected"), [(1, 1), (4, 1), (5, 2), (100, 25), (101, 26)])
def test_subsampling_lengths_are_ceil_of_a_quarter(frames: int, expected: int) -> None:
    assert int(subsampled_lengths(torch.tensor([frames]))[0]) == expected


def test_output_shape_is_batch_by_subsampled_time_by_vocab_plus_blank() -> None:
    model = _model()
    lengths = torch.tensor([203, 150])
    logprobs, out_lengths = model(torch.randn(2, 80, 203), lengths)
    assert logprobs.shape == (2, 51, 29)
    assert out_lengths.tolist() == [51, 38]
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(2, 51), atol=1e-5)
    assert model.blank == 28


def test_padding_does_not_change_an_utterance_output() -> None:
    model = _model()
    feats = torch.randn(1, 80, 120)
    alone, n = model(feats, torch.tensor([120]))
    padded = torch.cat([feats, torch.randn(1, 80, 80)], dim=2)
    batch = torch.cat([padded, torch.randn(1, 80, 200)], dim=0)
    together, _ = model(batch, torch.tensor([120, 200]))
    assert torch.allclose(alone[0, : int(n)], together[0, : int(n)], atol=1e-4)


def test_sizes_come_from_the_config() -> None:
    small, large = _model(), _model(d_model=64, n_layers=3, ff_dim=128)
    assert count_parameters(large) > 2 * count_parameters(small)
    assert len(large.blocks) == 3


@pytest.mark.parametrize(
    "bad",
    [{"d_model": 30, "n_heads": 4}, {"conv_kernel": 8}, {"n_layers": 2, "ff_dims": [64]}],
)
def test_invalid_sizes_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ModelConfig.model_validate({**TINY_MODEL, **bad})
