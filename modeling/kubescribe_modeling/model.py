"""A Conformer-CTC acoustic model (Gulati et al. 2020; NeMo's layout).

Features ``[N, n_mels, T]`` -> convolutional subsampling x4 -> Conformer blocks (half-step
feed-forward, multi-head self-attention, convolution module, half-step feed-forward) -> a
linear CTC head with the blank last -> log-probabilities ``[N, T', V + 1]``.

Padded frames are masked in attention and zeroed before every convolution, so an utterance
gives the same output alone or in a padded batch.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kubescribe_modeling.config import ModelConfig

SUBSAMPLING_FACTOR = 4


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Output frames after two stride-2 convolutions (kernel 3, padding 1): ceil(L / 4)."""
    for _ in range(2):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def _sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    angles = positions * freqs[None, :]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(-1, dim)


class ConvSubsampling(nn.Module):
    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        freq = n_mels
        for _ in range(2):
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # feats: [N, n_mels, T] -> [N, 1, T, n_mels]
        x = feats.transpose(1, 2).unsqueeze(1)
        time_mask = torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]
        x = x * time_mask[:, None, :, None].to(x.dtype)
        x = F.relu(self.conv1(x))
        lengths1 = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        mask1 = torch.arange(x.shape[2], device=x.device)[None, :] < lengths1[:, None]
        x = x * mask1[:, None, :, None].to(x.dtype)
        x = F.relu(self.conv2(x))
        n, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(n, t, c * f))
        return x, subsampled_lengths(lengths)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.silu(self.linear1(self.norm(x))))
        return self.dropout(self.linear2(h))


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.norm(x)).reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // h)
        scores = scores.masked_fill(pad_mask[:, None, None, :], -1e4)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        return self.dropout(self.proj(out))


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).transpose(1, 2)  # [N, d, T]
        y = F.glu(self.pointwise1(y), dim=1)
        y = self.depthwise(y * keep[:, None, :])
        y = F.silu(self.conv_norm(y.transpose(1, 2))).transpose(1, 2)
        y = self.pointwise2(y)
        return self.dropout(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, ff_dim: int) -> None:
        super().__init__()
        self.ff1 = FeedForward(cfg.d_model, ff_dim, cfg.dropout)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(cfg.d_model, ff_dim, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, pad_mask)
        x = x + self.conv(x, keep)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerCTC(nn.Module):
    """``forward(features [N, n_mels, T], lengths [N])`` -> ``(logprobs [N, T', V+1], T' [N])``."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.subsampling = ConvSubsampling(cfg.n_mels, cfg.subsampling_channels, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg, ff) for ff in cfg.block_ff_dims())
        self.head = nn.Linear(cfg.d_model, vocab_size + 1)

    @property
    def blank(self) -> int:
        return self.vocab_size

    def conformer_blocks(self) -> list[ConformerBlock]:
        return [cast(ConformerBlock, block) for block in self.blocks]

    def logits(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths = self.subsampling(features, lengths)
        t = x.shape[1]
        x = x * math.sqrt(self.cfg.d_model) + _sinusoids(t, self.cfg.d_model, x.device)[None]
        x = self.dropout(x)
        positions = torch.arange(t, device=x.device)[None, :]
        pad_mask = positions >= out_lengths[:, None]
        keep = (~pad_mask).to(x.dtype)
        for block in self.blocks:
            x = block(x, pad_mask, keep)
        return self.head(x), out_lengths

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, out_lengths = self.logits(features, lengths)
        return torch.log_softmax(logits, dim=-1), out_lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
