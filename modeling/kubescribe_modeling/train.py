"""The training loop: CTC (plus an optional distillation term), time budget, checkpoints, resume.

``out_dir/last.pt`` is written after every epoch and every few minutes (with the position in
the epoch, so ``--resume`` continues where it stopped); ``out_dir/best.pt`` keeps the lowest
dev WER; ``out_dir/history.jsonl`` has one line per epoch.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kubescribe_runtime.manifest import NemoLogMelFrontend

from kubescribe_modeling.checkpoint import Checkpoint, VocabSpec, load_checkpoint, save_checkpoint
from kubescribe_modeling.config import TrainConfig
from kubescribe_modeling.dataset import (
    FeatureSet,
    iterate,
    load_features,
    make_batches,
    spec_augment,
)
from kubescribe_modeling.decode import greedy_ids, word_error_rate
from kubescribe_modeling.distill import distillation_loss
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.model import ConformerCTC, count_parameters
from kubescribe_modeling.vocab import CharVocabulary, Vocabulary, train_bpe

CHECKPOINT_EVERY_S = 300.0


@dataclass
class TrainResult:
    last: Path
    best: Path
    best_dev_wer: float
    epochs: int
    steps: int
    minutes: float
    parameters: int


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelingError("device cuda requested but no CUDA GPU is available")
        # TF32 matmuls: several times faster than full fp32, far below the noise of training.
        torch.set_float32_matmul_precision("high")
        return torch.device("cuda")
    return torch.device("cpu")


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to 5 % over ``progress`` (0..1 of the run)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def ctc_loss(
    logprobs: torch.Tensor,
    out_lengths: torch.Tensor,
    targets: Sequence[Sequence[int]],
    blank: int,
) -> torch.Tensor:
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
    target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
    return F.ctc_loss(
        logprobs.transpose(0, 1),
        flat.to(logprobs.device),
        out_lengths,
        target_lengths.to(logprobs.device),
        blank=blank,
        reduction="mean",
        zero_infinity=True,
    )


@torch.no_grad()
def transcribe(
    model: ConformerCTC,
    data: FeatureSet,
    indices: Sequence[int],
    vocab: Vocabulary,
    device: torch.device,
    batch_frames: int = 20000,
) -> list[str]:
    """Greedy transcripts of ``data[indices]`` (in the order of ``indices``)."""
    was_training = model.training
    model.eval()
    frames = [int(data.features[i].shape[1]) for i in indices]
    hyps: dict[int, str] = {}
    for batch in make_batches(frames, batch_frames):
        chosen = [indices[b] for b in batch]
        _, feats, lengths = next(iterate(data, [chosen]))
        logprobs, out_lengths = model(feats.to(device), lengths.to(device))
        lp = logprobs.float().cpu().numpy()
        for row, i in enumerate(chosen):
            hyps[i] = vocab.decode(greedy_ids(lp[row], int(out_lengths[row]), model.blank))
    model.train(was_training)
    return [hyps[i] for i in indices]


def _vocabulary(cfg: TrainConfig, train: FeatureSet) -> tuple[Vocabulary, VocabSpec]:
    if cfg.vocab.kind == "char":
        vocab = CharVocabulary()
        return vocab, VocabSpec("char", list(vocab.tokens))
    model_file = train_bpe(train.texts, cfg.vocab.bpe_size, cfg.out_dir / "bpe")
    from kubescribe_modeling.vocab import BpeVocabulary

    bpe = BpeVocabulary(model_file)
    return bpe, VocabSpec("bpe", list(bpe.tokens), model_file.read_bytes())


def _log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _feature_sets(cfg: TrainConfig, progress: bool) -> tuple[FeatureSet, FeatureSet]:
    frontend = NemoLogMelFrontend()
    cache_dir = cfg.cache_dir or cfg.corpus / "features"
    workers = cfg.feature_workers
    load = partial(load_features, progress=progress, workers=workers, language=cfg.language)
    train_set = load(cfg.corpus / "train.jsonl", cache_dir, frontend)
    dev_set = load(cfg.dev_manifest or cfg.corpus / "dev.jsonl", cache_dir, frontend)
    return train_set, dev_set


def prepare_features(cfg: TrainConfig, progress: bool = True) -> dict[str, int]:
    """Fill the feature cache (so that parallel runs share it instead of racing)."""
    train_set, dev_set = _feature_sets(cfg, progress)
    return {"train": len(train_set), "dev": len(dev_set)}


def train(
    cfg: TrainConfig,
    resume: bool = False,
    init: Checkpoint | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg``; ``init`` starts from given weights (and sizes), e.g. a pruned model."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    train_set, dev_set = _feature_sets(cfg, progress)
    if not len(train_set) or not len(dev_set):
        raise ModelingError(f"{cfg.corpus}: train or dev split is empty")
    train_indices = list(range(len(train_set)))
    if cfg.max_train_utterances:
        train_indices = train_indices[: cfg.max_train_utterances]
    dev_indices = list(range(min(cfg.dev_utterances, len(dev_set))))

    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = cfg.out_dir / "last.pt", cfg.out_dir / "best.pt"
    history = cfg.out_dir / "history.jsonl"
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "elapsed": 0.0, "best": math.inf}

    if resume:
        if not last_path.exists():
            raise ModelingError(f"{last_path}: nothing to resume")
        ckpt = load_checkpoint(last_path)
        vocab, spec = ckpt.vocab.build(cfg.out_dir), ckpt.vocab
        model = ConformerCTC(ckpt.model_config, len(spec.tokens))
        model.load_state_dict(ckpt.state_dict)
        state.update(ckpt.training.get("state", {}))
        optimizer_state = ckpt.training.get("optimizer")
    elif init is not None:
        vocab, spec = init.vocab.build(cfg.out_dir), init.vocab
        model = init.build_model()
        optimizer_state = None
    else:
        vocab, spec = _vocabulary(cfg, train_set)
        model = ConformerCTC(cfg.model, len(spec.tokens))
        optimizer_state = None
    model.to(device).train()
    model_config = model.cfg
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    teacher: ConformerCTC | None = None
    if cfg.distill.teacher is not None:
        teacher_ckpt = load_checkpoint(cfg.distill.teacher)
        if teacher_ckpt.vocab.tokens != spec.tokens:
            raise ModelingError("the teacher's vocabulary differs from the student's")
        teacher = teacher_ckpt.build_model().to(device).eval()

    targets = {i: vocab.encode(train_set.texts[i]) for i in train_indices}
    frames = train_set.frames()
    sub_frames = [int(frames[i]) for i in train_indices]
    gen = torch.Generator().manual_seed(cfg.seed)
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
    started = time.monotonic() - float(state["elapsed"])
    last_save = time.monotonic()
    n_params = count_parameters(model)

    def snapshot() -> Checkpoint:
        state["elapsed"] = time.monotonic() - started
        return Checkpoint(
            model_config,
            spec,
            {k: v.detach().cpu() for k, v in model.state_dict().items()},
            {
                "state": dict(state),
                "optimizer": optimizer.state_dict(),
                "config": cfg.model_dump(mode="json"),
            },
        )

    def score(epoch: int, complete: bool, losses: list[float]) -> None:
        """Dev WER now; keeps best.pt and writes last.pt and a history line."""
        hyps = transcribe(model, dev_set, dev_indices, vocab, device)
        dev_wer = word_error_rate([dev_set.texts[i] for i in dev_indices], hyps)
        record = {
            "epoch": epoch + 1,
            "complete": complete,
            "step": state["step"],
            "train_loss": float(np.mean(losses[-200:])) if losses else None,
            "dev_wer": dev_wer,
            "minutes": (time.monotonic() - started) / 60.0,
        }
        _log(history, record)
        if progress:
            print(json.dumps(record), flush=True)
        if dev_wer < float(state["best"]):
            state["best"] = dev_wer
            save_checkpoint(best_path, snapshot())
        save_checkpoint(last_path, snapshot())

    eval_every_s = cfg.eval_every_minutes * 60.0 if cfg.eval_every_minutes else math.inf
    last_eval = time.monotonic()
    out_of_time = False
    while state["epoch"] < cfg.epochs and not out_of_time:
        epoch = int(state["epoch"])
        batches = make_batches(sub_frames, cfg.batch_frames, random.Random(cfg.seed * 1000 + epoch))
        batches = [[train_indices[b] for b in batch] for batch in batches]
        start_batch = int(state["batch"])
        losses: list[float] = []
        bar = tqdm(
            total=len(batches),
            initial=start_batch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            dynamic_ncols=True,
        )
        for b, (indices, feats, lengths) in enumerate(iterate(train_set, batches[start_batch:])):
            elapsed = time.monotonic() - started
            if elapsed >= budget_s:
                out_of_time = True
                break
            step = int(state["step"])
            fraction = max(
                elapsed / budget_s if budget_s < math.inf else 0.0,
                (epoch + (start_batch + b) / len(batches)) / cfg.epochs,
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step, fraction)
            feats = spec_augment(feats, lengths, cfg.specaugment, gen).to(device)
            lengths = lengths.to(device)
            logits, out_lengths = model.logits(feats, lengths)
            logprobs = torch.log_softmax(logits, dim=-1)
            loss = ctc_loss(logprobs, out_lengths, [targets[i] for i in indices], model.blank)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits, _ = teacher.logits(feats, lengths)
                kd = distillation_loss(logits, teacher_logits, out_lengths, cfg.distill.temperature)
                loss = (1.0 - cfg.distill.weight) * loss + cfg.distill.weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state["step"] = step + 1
            state["batch"] = start_batch + b + 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", lr=f"{group['lr']:.2e}")
            if time.monotonic() - last_eval > eval_every_s and state["batch"] < len(batches):
                score(epoch, complete=False, losses=losses)
                last_eval = last_save = time.monotonic()
            elif time.monotonic() - last_save > CHECKPOINT_EVERY_S:
                save_checkpoint(last_path, snapshot())
                last_save = time.monotonic()
        bar.close()
        finished_epoch = not out_of_time
        if finished_epoch:
            state["epoch"] = epoch + 1
            state["batch"] = 0
        score(epoch, complete=finished_epoch, losses=losses)
        last_eval = last_save = time.monotonic()
    if not best_path.exists():
        save_checkpoint(best_path, snapshot())
    return TrainResult(
        last=last_path,
        best=best_path,
        best_dev_wer=float(state["best"]),
        epochs=int(state["epoch"]),
        steps=int(state["step"]),
        minutes=(time.monotonic() - started) / 60.0,
        parameters=n_params,
    )
