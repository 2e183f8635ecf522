"""Render a model card (Markdown) from the measured ``results.json`` of ``report``.

    python -m kubescribe_modeling.card examples/models/demo/results.json \\
        --manifest examples/models/demo/kubescribe.yaml --out examples/models/demo/MODEL_CARD.md

Numbers come only from ``results.json`` and the manifest; this module only formats them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubescribe_runtime.manifest import ArtifactManifest

from kubescribe_modeling.card_real import headline, limitations, real_speech_section

DEFAULT_TRAIN_MACHINE = "CPU only (the shared 2-core CI machine)"

#: How the demo model and the table's rows were made (kept next to the code that renders them).
COMMANDS = """\
# 1. plan the corpus here (planning needs the text resources and wordfreq; rendering does not)
kubescribe data --out data/corpus --hours 40 --seed 0 --template-fraction 0.35 \\
    --plan-out plan.jsonl
# 2. on one H200 (one 9-minute command of the device lease; espeak-ng and the missing wheels
#    carried along): render on 16 cores, fill the feature cache, phase 1 trains the char
#    teacher (configs/large.yaml) and a BPE-256 twin side by side, phase 2 trains the student
#    from scratch, the student distilled from the teacher and the teacher pruned by half
#    (+ fine-tune) side by side
WORK=/tmp/ks modeling/recipes/demo-gpu.sh plan.jsonl $OUT 535
# 3. the demo model: the char teacher resumed on the same GPU to a 7.4-minute budget
kubescribe train --config modeling/kubescribe_modeling/configs/large.yaml --device cuda \\
    --out-dir /tmp/ks/teacher --resume --max-minutes 7.4 --no-progress \\
    --set corpus=/tmp/ks/corpus --set cache_dir=/tmp/ks/features --set threads=8 \\
    --set batch_frames=60000 --set eval_every_minutes=0.7 --set dev_utterances=600 \\
    --set lr=0.002 --set warmup_steps=300
# 4. back here: the artifacts (parity-checked, int8, WER on the committed test set)
kubescribe export runs/gpu/teacher2.pt examples/models/demo --int8 --testset examples/testset \\
    --name kubescribe-demo-en --version 2.0.0
for m in teacher student distilled pruned; do
  kubescribe export runs/gpu/$m.pt runs/gpu/art/$m --int8 --testset examples/testset
done
# 5. the tables of this card: report (every row measured here), then card; the whole command,
#    rows and notes included, is examples/models/demo/training/report.sh
bash examples/models/demo/training/report.sh
"""


def _espeak(banner: str | None) -> str:
    """``"eSpeak NG text-to-speech: 1.51  Data at: ..."`` -> ``"eSpeak NG 1.51"``."""
    if not banner:
        return "espeak-ng"
    version = banner.split(":")[1].split()[0] if banner.count(":") >= 1 else ""
    return f"eSpeak NG {version}".strip()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _twin_caveat(results: dict[str, Any]) -> str:
    facts = results.get("heldout", {}).get("training_text", {})
    if not facts.get("twin_voice_utterances"):
        return ""
    twin = results["heldout"].get("twin_voice", "")
    return (
        f" — but the training voices included `aunty`, the formant twin of `{twin}` (see Results)"
    )


def _heldout_order(row: dict[str, Any]) -> tuple[bool, bool]:
    """Independent text before templates; within each, wideband before telephone."""
    return ("template" in row["text"], row["audio"] != "wideband")


def _twin_comparison(rows: list[dict[str, Any]], twin: str, unseen: list[str]) -> str:
    """Whether the twin voice scored better than the unseen one on the first (independent) row."""
    first = rows[0]["voices"] if rows else {}
    if twin not in first or not unseen or unseen[0] not in first:
        return ""
    a, b = first[twin]["wer"], first[unseen[0]]["wer"]
    if a < b:
        return f" (on {rows[0]['text']} it scores {_pct(a)} against {_pct(b)} for `{unseen[0]}`)"
    return (
        f" (it scores worse than `{unseen[0]}` all the same, {_pct(a)} against {_pct(b)} on "
        f"{rows[0]['text']}: the voices differ in difficulty, so what the twin gave cannot be "
        "read off, only excluded)"
    )


def heldout_section(heldout: dict[str, Any]) -> list[str]:
    """The figures a release can honestly claim, first: unseen speaker, independent text."""
    twin = heldout.get("twin_voice", "")
    facts = heldout.get("training_text", {})
    rows = sorted(heldout.get("rows", []), key=_heldout_order)
    voices = sorted({v for r in rows for v in r["voices"]})
    unseen = [v for v in voices if v != twin]
    out = [
        "### Held-out figures that hold — read these first",
        "",
        f"Measured on the shipped artifact (`{heldout['model_file']}`) by "
        "`python -m kubescribe_modeling.heldout` through kubescribe's runtime. Independent text "
        "comes first, then the same audio as a phone call carries it, and the template "
        "sentences last:",
        "",
    ]
    tuned_on_test = heldout.get("weights_tuned_on") == "test"
    if facts.get("twin_voice_utterances"):
        share = facts["twin_voice_utterances"] / max(1, facts["train_utterances"])
        out.append(
            f"- **Speaker.** The training voices included `aunty`, an espeak-ng variant with the "
            f"same formants 1–8 as the held-out `{twin}` (only pitch and flutter differ): "
            f"{facts['twin_voice_utterances']} of the {facts['train_utterances']} training clips "
            f"({100 * share:.1f} %) had `{twin}`'s timbre, so `{twin}` is not an unseen speaker "
            f"for this model. The headline figures are for {', '.join(f'`{v}`' for v in unseen)}, "
            f"which it never heard; `{twin}` is shown apart{_twin_comparison(rows, twin, unseen)}. "
            "(`aunty` has left the training voices since; a test compares every training voice's "
            "formants with the held-out ones.)"
        )
    if tuned_on_test:
        out.append(
            "- **Text.** The open-vocabulary sampling weights of its training text were tuned on "
            "the independent *test* sentences (their out-of-vocabulary rate), so the test set "
            "helped choose what the model trained on and its figure may flatter the model. The "
            "independent *dev* sentences, written by hand afterwards and used by nothing that "
            "shaped this model, give the unbiased figure; tuning now reads only them"
            + (
                f". Against this model's training text they leave "
                f"{100 * facts['oov_independent_dev']:.1f} % (dev) and "
                f"{100 * facts['oov_independent_test']:.1f} % (test) of their words unseen: the "
                "tuning bought no visible coverage, but only the dev figure is free of it."
                if "oov_independent_dev" in facts
                else "."
            )
        )
    if "template_frames" in facts:
        per_frame = facts["train_template_sentences"] / max(1, facts["template_frames"])
        out.append(
            "- **Templates.** The held-out template sentences are in-distribution: they fill the "
            f"same {facts['template_frames']} frames as the {facts['train_template_sentences']} "
            f"training template sentences (about {per_frame:.0f} per frame), and "
            f"{100 * facts['held_out_templates_one_word_from_train']:.0f} % of them are one word "
            "away from a training sentence. Their WER measures the generator, not English."
        )
    out += [
        "- **Telephone.** Every clip also as a call: resampled to 8 kHz and coded with G.711 "
        "μ-law (the runtime's codec) into WAV files, which the runtime decodes and resamples, as "
        "it would a recorded call"
        + (
            "; this model never trained on narrowband audio (the telephone augmentation came "
            "later)."
            if tuned_on_test
            else "."
        ),
        "",
        _table(
            [
                "text",
                "audio",
                *[f"WER `{v}` (unseen)" for v in unseen],
                "utterances",
                *([f"WER `{twin}` (twin trained)"] if twin in voices else []),
            ],
            [
                [
                    r["text"],
                    r["audio"],
                    *[_pct(r["voices"].get(v, {}).get("wer")) for v in unseen],
                    str(sum(r["voices"].get(v, {}).get("utterances", 0) for v in unseen)),
                    *([_pct(r["voices"].get(twin, {}).get("wer"))] if twin in voices else []),
                ]
                for r in rows
            ],
        ),
        "",
    ]
    committed = heldout.get("committed")
    if committed:
        kept = {v: x for v, x in committed["voices"].items() if v != twin}
        out += [
            f"On the committed test set `{committed['testset']}` the WER recorded in the "
            f"manifest (and bounded by the tests) is {_pct(committed['wer'])} over both voices; "
            + ", ".join(
                f"{_pct(x['wer'])} on `{v}` alone ({x['utterances']} utterances)"
                for v, x in kept.items()
            )
            + (
                f", {_pct(committed['voices'][twin]['wer'])} on `{twin}`."
                if twin in committed["voices"]
                else "."
            ),
            "",
        ]
    return out


def render(results: dict[str, Any], manifest: ArtifactManifest) -> str:
    clips = {c.path for c in manifest.reference.clips} if manifest.reference else set()
    out: list[str] = [
        f"# Model card: {manifest.name} {manifest.version}",
        "",
        manifest.description
        or "A small English Conformer-CTC speech recogniser trained on synthetic speech.",
        "",
        *([headline(results), ""] if headline(results) else []),
        "*Generated by `python -m kubescribe_modeling.card` from `results.json`; every number "
        "below was measured by `python -m kubescribe_modeling.report`.*",
        "",
        *real_speech_section(results),
        "## Model",
        "",
        f"- Architecture: Conformer-CTC (convolutional subsampling x{manifest.subsampling_factor}, "
        "Conformer blocks: half-step feed-forward, multi-head self-attention, convolution module, "
        "half-step feed-forward), character vocabulary (`▁` word boundary, a-z, apostrophe) "
        f"of {manifest.vocab_size} tokens plus the CTC blank (last).",
        "- Input: NeMo log-mel features (16 kHz, 80 mel bins, 25 ms window, 10 ms hop, "
        "per-feature normalisation). Output: `logprobs` [N, T/4, V+1].",
        f"- Files: {', '.join(f'`{f}`' for f in manifest.files if f not in clips)} "
        "(loads unchanged in kubescribe, onnx-asr and sherpa-onnx).",
        *_reference_line(manifest),
        "",
    ]
    corpus = results.get("corpus")
    if corpus:
        splits = corpus.get("splits", {})
        out += [
            "## Data",
            "",
            "Synthetic speech made by `kubescribe data` with "
            f"{_espeak(corpus.get('espeak_ng'))}: many voices and variants, speeds and "
            "pitches, noise, gain and small reverb on the training audio; SpecAugment at training "
            "time. Text: generated customer-service sentences (numbers, dates, names, addresses) "
            "and open-vocabulary everyday English; the test set's *independent* sentences were "
            "written separately from the generator, and its voices "
            f"({', '.join(corpus.get('held_out_voices', []))}) are never used in training"
            + _twin_caveat(results)
            + ".",
            "",
            _table(
                ["split", "utterances", "hours", "voices", "sources"],
                [
                    [
                        name,
                        str(s.get("utterances")),
                        f"{s.get('hours', 0):.2f}",
                        str(s.get("voices")),
                        ", ".join(f"{k} {v}" for k, v in s.get("sources", {}).items()),
                    ]
                    for name, s in splits.items()
                ],
            ),
            "",
        ]
    training = results.get("demo_training")
    if training:
        out += [
            "## Training",
            "",
            f"Trained on {results.get('train_machine', DEFAULT_TRAIN_MACHINE)}: "
            f"{training.get('train_minutes')} training minutes, {training.get('steps')} steps, "
            f"{training.get('epochs_completed')} complete epoch(s) of the training split; "
            f"best dev WER {_pct(training.get('best_dev_wer'))}. Commands:",
            "",
            "```sh",
            results.get("commands", COMMANDS).rstrip(),
            "```",
            "",
        ]
    out += ["## Results", ""]
    heldout = results.get("heldout")
    if heldout:
        out += heldout_section(heldout)
    full = results.get("full_test")
    if full:
        out += [
            *(["### Both held-out voices, as recorded at release", ""] if heldout else []),
            f"Full held-out test split `{full['testset']}` ({full['utterances']} utterances, "
            "held-out voices; *template* = held-out sentences of the generator, *independent* = "
            "everyday English written separately), transcribed by kubescribe's runtime:",
            "",
            _table(
                ["model file", "WER", "WER template", "WER independent"],
                [
                    [
                        f"`{r['model_file']}`",
                        _pct(r.get("wer")),
                        _pct(r.get("wer_template")),
                        _pct(r.get("wer_independent")),
                    ]
                    for r in full["results"]
                ],
            ),
            "",
        ]
    interop = results.get("interop")
    if interop:
        out += [
            f"### Same artifact, three engines (committed test set `{results['testset']}`, "
            f"{results['utterances']} utterances)",
            "",
            "kubescribe and onnx-asr compute the same NeMo features; sherpa-onnx computes "
            "Kaldi-style features (close, not identical), so its figure may differ slightly.",
            "",
            _table(
                ["engine", "model file", "WER", "WER template", "WER independent"],
                [
                    [
                        r["engine"],
                        f"`{r['model_file']}`",
                        _pct(r.get("wer")),
                        _pct(r.get("wer_template")),
                        _pct(r.get("wer_independent")),
                    ]
                    for r in interop
                ],
            ),
            "",
        ]
    rows = results.get("rows")
    split = any("wer_template" in r for r in rows or [])
    if rows:
        out += [
            "### Distillation, pruning and quantisation" if split else "### Size and speed",
            "",
            f"{'Committed test set' if split else 'Test set `' + results['testset'] + '`'}; "
            "real-time factor = compute time / audio time on "
            f"{results.get('machine', 'CPU')} (features + ONNX + greedy CTC, one utterance at a "
            "time; lower is faster). Training minutes are each run's own wall-clock training "
            f"time, on {results.get('train_machine', DEFAULT_TRAIN_MACHINE)}.",
            "",
            _table(
                [
                    "model",
                    "parameters",
                    "ONNX size",
                    "CPU RTF",
                    "WER",
                    *(["WER template", "WER independent"] if split else []),
                    "training",
                ],
                [
                    [
                        r["label"],
                        f"{r['parameters'] / 1e6:.2f} M",
                        f"{r['onnx_mb']:.1f} MB",
                        f"{r['rtf']:.3f}",
                        _pct(r.get("wer")),
                        *(
                            [_pct(r.get("wer_template")), _pct(r.get("wer_independent"))]
                            if split
                            else []
                        ),
                        f"{r['train_minutes']} min" if "train_minutes" in r else "–",
                    ]
                    for r in rows
                ],
            ),
            "",
        ]
    notes = results.get("notes")
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    out += ["## Limitations", "", limitations(results), ""]
    return "\n".join(out)


def _reference_line(manifest: ArtifactManifest) -> list[str]:
    """The quality gate's clips (docs/artifacts.md), where the artifact carries them."""
    reference = manifest.reference
    if reference is None:
        return []
    declared = ", ".join(f"`{f}` {100 * w:.1f} %" for f, w in reference.wer.items())
    return [
        f"- Reference clips (the quality gate): {len(reference.clips)} clips of "
        f"`{reference.test_set}` in `reference/`; declared WER on them: {declared} (a pod that "
        "does worse than this plus `spec.qualityGate.werTolerance` never takes traffic)."
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubescribe_modeling.card")
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--manifest", type=Path, required=True, help="the artifact's kubescribe.yaml"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    manifest = ArtifactManifest.from_yaml(args.manifest.read_text(encoding="utf-8"))
    args.out.write_text(render(results, manifest), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
