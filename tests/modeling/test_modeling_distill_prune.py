from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kubescribe_modeling.checkpoint import Checkpoint, save_checkpoint
from kubescribe_modeling.distill import distillation_loss
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.model import count_parameters
from kubescribe_modeling.prune import prune_checkpoint
from kubescribe_modeling.train import train
from modeling_support import tiny_config


def test_kl_term_is_zero_for_identical_posteriors_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 10, 29)
    lengths = torch.tensor([10, 6])
    assert float(distillation_loss(teacher.clone(), teacher, lengths)) == pytest.approx(0, abs=1e-6)
    assert float(distillation_loss(torch.randn(2, 10, 29), teacher, lengths)) > 0.1


def test_kl_term_ignores_padded_frames_and_trains_the_student() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(1, 8, 5)
    student = teacher.clone()
    student[0, 6:] = torch.randn(2, 5) * 10  # differs only in padding
    assert float(distillation_loss(student, teacher, torch.tensor([6]))) == pytest.approx(
        0, abs=1e-6
    )
    student = torch.zeros(1, 8, 5, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([8]), temperature=2.0).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_distillation_needs_matching_outputs() -> None:
    with pytest.raises(ValueError, match="same vocabulary"):
        distillation_loss(torch.zeros(1, 4, 5), torch.zeros(1, 4, 6), torch.tensor([4]))


def test_training_with_a_teacher_runs_and_refuses_another_vocabulary(
    tiny_corpus: Path, tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    teacher_path = tmp_path / "teacher.pt"
    save_checkpoint(teacher_path, tiny_checkpoint)
    small = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_dim": 32, "subsampling_channels": 8,
             "conv_kernel": 5, "dropout": 0.0}  # fmt: skip
    cfg = tiny_config(
        tiny_corpus, tmp_path / "student", epochs=1, model=small,
        distill={"teacher": str(teacher_path), "weight": 0.5, "temperature": 2.0},
    )  # fmt: skip
    assert train(cfg, progress=False).steps > 0
    bpe_vocab = cfg.vocab.model_copy(update={"kind": "bpe", "bpe_size": 20})
    bpe = cfg.model_copy(update={"vocab": bpe_vocab, "out_dir": tmp_path / "bpe"})
    with pytest.raises(ModelingError, match="vocabulary differs"):
        train(bpe, progress=False)


def test_structured_pruning_removes_the_weakest_units(tiny_checkpoint: Checkpoint) -> None:
    state = dict(tiny_checkpoint.state_dict)
    # Make unit 3 of block 0's first feed-forward clearly the weakest.
    weight = state["blocks.0.ff1.linear1.weight"].clone()
    weight[3] = 0.0
    state["blocks.0.ff1.linear1.weight"] = weight
    ckpt = Checkpoint(tiny_checkpoint.model_config, tiny_checkpoint.vocab, state)
    pruned = prune_checkpoint(ckpt, 0.5)
    assert pruned.model_config.ff_dims == [32, 32]
    before, after = count_parameters(ckpt.build_model()), count_parameters(pruned.build_model())
    assert after < before
    kept = pruned.state_dict["blocks.0.ff1.linear1.weight"]
    assert not any(torch.equal(row, torch.zeros_like(row)) for row in kept)
    feats, lengths = torch.randn(1, 80, 60), torch.tensor([60])
    logprobs, _ = pruned.build_model()(feats, lengths)
    assert torch.isfinite(logprobs).all()


@pytest.mark.parametrize("amount", [0.0, 1.0, 1.5])
def test_prune_amount_must_be_a_fraction(tiny_checkpoint: Checkpoint, amount: float) -> None:
    with pytest.raises(ModelingError, match="between 0 and 1"):
        prune_checkpoint(tiny_checkpoint, amount)


def test_pruned_checkpoint_fine_tunes(
    tiny_corpus: Path, tiny_checkpoint: Checkpoint, tmp_path: Path
) -> None:
    pruned = prune_checkpoint(tiny_checkpoint, 0.5)
    result = train(tiny_config(tiny_corpus, tmp_path / "ft", epochs=1), init=pruned, progress=False)
    assert result.parameters == count_parameters(pruned.build_model())
