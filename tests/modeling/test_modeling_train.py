from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from kubescribe_modeling.checkpoint import load_checkpoint
from kubescribe_modeling.config import ModelConfig, load_config
from kubescribe_modeling.dataset import collate, load_features, make_batches
from kubescribe_modeling.errors import ConfigError, ModelingError
from kubescribe_modeling.model import ConformerCTC
from kubescribe_modeling.train import ctc_loss, learning_rate, train
from kubescribe_modeling.vocab import CharVocabulary
from kubescribe_runtime.manifest import NemoLogMelFrontend
from modeling_support import tiny_config


def test_a_few_steps_reduce_the_ctc_loss(tiny_corpus: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_features(tiny_corpus / "dev.jsonl", tmp_path, NemoLogMelFrontend(), progress=False)
    vocab = CharVocabulary()
    model = ConformerCTC(tiny_config(tiny_corpus, tmp_path).model, len(vocab.tokens))
    feats, lengths = collate(data.features)
    targets = [vocab.encode(t) for t in data.texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        logprobs, out_lengths = model(feats, lengths)
        loss = ctc_loss(logprobs, out_lengths, targets, model.blank)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_training_writes_checkpoints_and_history_then_resumes(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path / "run", epochs=1)
    first = train(cfg, progress=False)
    assert first.epochs == 1 and first.steps > 0
    assert first.last.exists() and first.best.exists()
    history = [
        json.loads(line) for line in (tmp_path / "run/history.jsonl").read_text().splitlines()
    ]
    assert [h["epoch"] for h in history] == [1]
    assert history[0]["dev_wer"] >= 0.0

    resumed = train(cfg.model_copy(update={"epochs": 2}), resume=True, progress=False)
    assert resumed.epochs == 2
    assert resumed.steps == 2 * first.steps  # continued, not restarted
    state = load_checkpoint(resumed.last).training["state"]
    assert state["epoch"] == 2 and state["step"] == resumed.steps


def test_dev_is_scored_within_an_epoch_when_asked(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tiny_corpus, tmp_path / "run", epochs=1, batch_frames=400, eval_every_minutes=1e-9
    )
    train(cfg, progress=False)
    lines = (tmp_path / "run/history.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    assert len(history) > 1
    assert [h["complete"] for h in history][-1] is True
    assert not any(h["complete"] for h in history[:-1])


def test_resume_without_a_checkpoint_is_an_error(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelingError, match="nothing to resume"):
        train(tiny_config(tiny_corpus, tmp_path / "empty"), resume=True, progress=False)


def test_time_budget_stops_training_early(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path / "run", epochs=50, max_minutes=1e-6)
    result = train(cfg, progress=False)
    assert result.epochs == 0 and result.steps == 0
    assert result.last.exists()  # still leaves a usable checkpoint


def test_bpe_training_run_keeps_its_sentencepiece_model(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        tiny_corpus, tmp_path / "bpe", epochs=1, vocab={"kind": "bpe", "bpe_size": 20}
    )
    ckpt = load_checkpoint(train(cfg, progress=False).best)
    vocab = ckpt.vocab.build(tmp_path)
    assert ckpt.vocab.kind == "bpe" and len(vocab.tokens) == 20
    assert vocab.decode(vocab.encode("hello world")) == "hello world"


def test_batches_respect_the_frame_budget_and_cover_everything() -> None:
    frames = [random.Random(i).randint(50, 400) for i in range(100)]
    batches = make_batches(frames, 1200, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(len(b) * max(frames[i] for i in b) <= 1200 or len(b) == 1 for b in batches)


def test_learning_rate_warms_up_then_decays() -> None:
    cfg = tiny_config(Path("."), Path("."), lr=1e-3, warmup_steps=10)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10, 0.0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100, 1.0) == pytest.approx(5e-5)


def test_model_config_is_part_of_the_checkpoint(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    assert tiny_checkpoint.model_config == ModelConfig.model_validate(
        tiny_checkpoint.model_config.model_dump()
    )
    model = tiny_checkpoint.build_model()
    assert model.vocab_size == len(tiny_checkpoint.vocab.tokens)


def test_feature_cache_filled_by_several_processes_equals_one_process(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    frontend = NemoLogMelFrontend()
    manifest = tiny_corpus / "train.jsonl"
    one = load_features(manifest, tmp_path / "one", frontend, progress=False, workers=1)
    two = load_features(manifest, tmp_path / "two", frontend, progress=False, workers=2)
    assert len(one) == len(two) > 1
    pairs = zip(one.features, two.features, strict=True)
    assert all(a.dtype == b.dtype and (a == b).all() for a, b in pairs)
    assert one.texts == two.texts
    # The cache written by the pool reads back the same as well.
    again = load_features(manifest, tmp_path / "two", frontend, progress=False)
    assert all((a == b).all() for a, b in zip(one.features, again.features, strict=True))


def test_set_overrides_reach_nested_keys_with_yaml_values(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: {d_model: 64, n_heads: 4}\nlr: 0.002\n")
    cfg = load_config(
        config,
        {"epochs": 3},
        ["model.d_model=96", "vocab.kind=bpe", "max_minutes=2.5", "specaugment.time_masks=0"],
    )
    assert cfg.model.d_model == 96 and cfg.model.n_heads == 4  # siblings kept
    assert cfg.vocab.kind == "bpe" and cfg.max_minutes == 2.5 and cfg.epochs == 3
    assert cfg.specaugment.time_masks == 0 and cfg.lr == 0.002


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("d_model", "KEY=VALUE"),
        ("=3", "KEY=VALUE"),
        ("lr.fast=1", "lr is not a mapping"),
        ("model.d_model=[1", "not valid YAML"),
        ("model.d_model=wide", "model.d_model"),
        ("no_such_key=1", "no_such_key"),
    ],
)
def test_bad_set_overrides_are_clear_errors(tmp_path: Path, setting: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.002\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config, None, [setting])
