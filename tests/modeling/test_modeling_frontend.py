from __future__ import annotations

import numpy as np
import torch
from kubescribe_modeling.frontend import LogMel
from kubescribe_runtime.features import log_mel, num_frames
from kubescribe_runtime.manifest import NemoLogMelFrontend


def test_torch_front_end_equals_the_runtime_features() -> None:
    rng = np.random.default_rng(0)
    frontend = NemoLogMelFrontend()
    lengths = [16000, 9731, 4000]
    waves = [
        (0.1 * rng.standard_normal(n) + 0.2 * np.sin(np.arange(n) / 7.0)).astype(np.float32)
        for n in lengths
    ]
    batch = torch.zeros(len(waves), max(lengths))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    feats, valid = LogMel(frontend)(batch, torch.tensor(lengths))
    for i, w in enumerate(waves):
        expected = log_mel(w, frontend)
        n = num_frames(len(w), frontend)
        assert int(valid[i]) == n
        np.testing.assert_allclose(feats[i, :, :n].numpy(), expected[:, :n], atol=2e-3)
        assert torch.count_nonzero(feats[i, :, n:]) == 0
