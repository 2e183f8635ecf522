"""Structured pruning: drop the least important hidden units of every feed-forward module.

A unit's importance is ``||W1[j, :]|| * ||W2[:, j]||`` (its input and output weight norms);
both feed-forward modules of a block keep the same number of units, so the pruned model is a
plain smaller Conformer (``ff_dims`` in its config) that exports like any other. Fine-tune it
afterwards with ``train`` started from the pruned checkpoint.
"""

from __future__ import annotations

import torch

from kubescribe_modeling.checkpoint import Checkpoint
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.model import ConformerCTC, FeedForward


def _importance(ff: FeedForward) -> torch.Tensor:
    return ff.linear1.weight.norm(dim=1) * ff.linear2.weight.norm(dim=0)


def _copy_pruned(source: FeedForward, target: FeedForward, keep: torch.Tensor) -> None:
    with torch.no_grad():
        target.norm.load_state_dict(source.norm.state_dict())
        target.linear1.weight.copy_(source.linear1.weight[keep])
        target.linear1.bias.copy_(source.linear1.bias[keep])
        target.linear2.weight.copy_(source.linear2.weight[:, keep])
        target.linear2.bias.copy_(source.linear2.bias)


def prune_checkpoint(checkpoint: Checkpoint, amount: float) -> Checkpoint:
    """A new checkpoint with ``amount`` (0..1) of every feed-forward hidden layer removed."""
    if not 0.0 < amount < 1.0:
        raise ModelingError(f"prune amount must be between 0 and 1 (exclusive), got {amount}")
    model = checkpoint.build_model()
    keeps: list[tuple[torch.Tensor, torch.Tensor]] = []
    dims: list[int] = []
    for block in model.conformer_blocks():
        hidden = block.ff1.linear1.out_features
        kept = max(1, round(hidden * (1.0 - amount)))
        dims.append(kept)
        keep1, keep2 = (
            torch.sort(torch.topk(_importance(ff), kept).indices).values
            for ff in (block.ff1, block.ff2)
        )
        keeps.append((keep1, keep2))
    config = checkpoint.model_config.model_copy(update={"ff_dims": dims})
    pruned = ConformerCTC(config, model.vocab_size)
    state = {k: v for k, v in model.state_dict().items() if ".ff1." not in k and ".ff2." not in k}
    missing = pruned.load_state_dict(state, strict=False).missing_keys
    if any(".ff1." not in k and ".ff2." not in k for k in missing):
        raise ModelingError(f"pruning lost weights: {missing}")
    for block, new_block, (keep1, keep2) in zip(
        model.conformer_blocks(), pruned.conformer_blocks(), keeps, strict=True
    ):
        _copy_pruned(block.ff1, new_block.ff1, keep1)
        _copy_pruned(block.ff2, new_block.ff2, keep2)
    return Checkpoint(
        model_config=config,
        vocab=checkpoint.vocab,
        state_dict={k: v.detach().clone() for k, v in pruned.state_dict().items()},
        training={"pruned_from": checkpoint.training.get("config"), "amount": amount},
    )
