"""NeMo's log-mel front end in torch, with the runtime's parameters.

The numbers are those of ``kubescribe_runtime.features`` (numpy, used by the runtime and to
precompute training features); this module computes the same features batched on a torch
device, so that training on a GPU can featurise on the fly. A test holds the two equal.
"""

from __future__ import annotations

import torch
from kubescribe_runtime.features import mel_filterbank
from kubescribe_runtime.manifest import NemoLogMelFrontend
from torch import nn

_STD_EPS = 1e-5


def feature_lengths(num_samples: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Valid frames of waveforms of ``num_samples`` samples (NeMo's ``get_seq_len``)."""
    return torch.div(num_samples, hop_length, rounding_mode="floor").long()


class LogMel(nn.Module):
    """Waveforms ``[N, S]`` and lengths ``[N]`` -> features ``[N, n_mels, S // hop + 1]``."""

    fbank: torch.Tensor
    window: torch.Tensor

    def __init__(self, frontend: NemoLogMelFrontend | None = None, sample_rate: int = 16000):
        super().__init__()
        self.frontend = frontend or NemoLogMelFrontend()
        f = self.frontend
        fbank = torch.from_numpy(mel_filterbank(sample_rate, f.n_fft, f.n_mels).copy())
        window = torch.hann_window(f.win_length, periodic=False, dtype=torch.float64)
        self.register_buffer("fbank", fbank, persistent=False)
        self.register_buffer("window", window.float(), persistent=False)

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.frontend
        x = waveforms.float()
        positions = torch.arange(x.shape[1], device=x.device)[None, :]
        if f.preemph:
            x = torch.cat([x[:, :1], x[:, 1:] - f.preemph * x[:, :-1]], dim=1)
        x = x.masked_fill(positions >= lengths[:, None], 0.0)
        spec = torch.stft(
            x,
            n_fft=f.n_fft,
            hop_length=f.hop_length,
            win_length=f.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.pow(2) + spec.imag.pow(2)  # [N, F, T]
        mel = torch.matmul(self.fbank, power)  # [N, n_mels, T]
        logmel = torch.log(mel + f.log_zero_guard)
        valid = feature_lengths(lengths, f.hop_length)
        mask = torch.arange(logmel.shape[2], device=x.device)[None, :] < valid[:, None]
        maskf = mask[:, None, :].to(logmel.dtype)
        count = valid.clamp(min=1)[:, None].to(logmel.dtype)
        mean = (logmel * maskf).sum(dim=2) / count
        centred = (logmel - mean[:, :, None]) * maskf
        var = centred.pow(2).sum(dim=2) / (valid - 1).clamp(min=1)[:, None].to(logmel.dtype)
        std = torch.where(valid[:, None] > 1, var.sqrt(), torch.zeros_like(var))
        feats = centred / (std[:, :, None] + _STD_EPS)
        return feats * maskf, valid
