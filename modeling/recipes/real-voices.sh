#!/usr/bin/env bash
# A model aimed at real callers, end to end: real-speech dev/test sets, many-engine training
# speech through telephone channels, training with model selection on recorded speech, export
# with the real-speech WER in the manifest.
#
#   modeling/recipes/real-voices.sh LANG OUT [TRAIN_MINUTES]
#
# LANG is en or es. Steps, each an ordinary kubescribe command:
#  1. the real-speech dev and test sets from Debian's Asterisk prompts (`make tools` installs
#     them); the split goes by sentence, so no test sentence is ever a dev sentence;
#  2. the training corpus (kubescribe_modeling.data.realvoices): espeak-ng voices × variants,
#     Flite's voices (English), MBROLA's where installed; speed/pitch perturbation, reverb,
#     babble or noise, telephone band limits, G.711 μ-law/A-law and GSM through sox; no
#     training sentence says a dev or test sentence;
#  3. training, the best checkpoint chosen on the real-speech dev split (dev_manifest); with
#     INIT (a checkpoint or an exported artifact, e.g. examples/models/demo) it is a warm start
#     from those weights, sizes and character head (configs/realvoices-warm-cpu.yaml by default);
#  4. export to OUT (int8 too), WER on the real-speech test split, then the synthetic one:
#     examples/testset for English; for Spanish a clean set in held-out voices (es+f4,
#     es-419+m5, outside the training catalogue; kubescribe_modeling.data.voice_testset) of
#     sentences no training clip says; recorded in kubescribe.yaml.
#
# Environment: WORK (scratch, default /tmp/kubescribe-realvoices-LANG), PYTHON (default
# python3), INIT (warm start), CONFIG (default configs/realvoices-cpu.yaml, with INIT
# configs/realvoices-warm-cpu.yaml), UTTERANCES (default 2400), HELDOUT (Spanish held-out-voice
# clips, default 60), WORKERS
# (rendering processes, default 1), LIMIT (at most this many dev and test prompts: a quick
# check), REFERENCE_CLIPS (the quality gate's clips from the real-speech test split, default
# export's; 0: none), NAME, VERSION, DESCRIPTION, and SETTINGS (extra `--set K=V` for
# training, e.g. "--set device=cuda"). modeling/recipes/real-voices-gpu.sh is the full run.
set -euo pipefail

lang=$1
out=$2
minutes=${3:-12}
work=${WORK:-/tmp/kubescribe-realvoices-$lang}
py=${PYTHON:-python3}
configs=$(cd "$(dirname "$0")/../kubescribe_modeling/configs" && pwd)
init=()
config=${CONFIG:-$configs/realvoices-cpu.yaml}
if [ -n "${INIT:-}" ]; then
  init=(--init "$INIT")
  config=${CONFIG:-$configs/realvoices-warm-cpu.yaml}
fi
started=$SECONDS
mkdir -p "$work" "$out"
ks() { "$py" -m kubescribe "$@"; }
stamp() { echo "== [$((SECONDS - started)) s] $*"; }

stamp "real-speech dev and test sets ($lang)"
limit=()
if [ -n "${LIMIT:-}" ]; then limit=(--limit "$LIMIT"); fi
ks data --asterisk "$lang" --split dev --out "$work/asterisk-dev" "${limit[@]}"
ks data --asterisk "$lang" --split test --out "$work/asterisk-test" "${limit[@]}"

stamp "training speech: ${UTTERANCES:-2400} clips"
if [ ! -s "$work/corpus/train.jsonl" ]; then
  "$py" -m kubescribe_modeling.data.realvoices --language "$lang" \
    --utterances "${UTTERANCES:-2400}" --out "$work/corpus" --workers "${WORKERS:-1}" \
    --held "$work/asterisk-dev" --held "$work/asterisk-test"
fi

if [ "$lang" = es ]; then
  stamp "synthetic test set in held-out voices"
  "$py" -m kubescribe_modeling.data.voice_testset --language es --voice es+f4 \
    --voice es-419+m5 --utterances "${HELDOUT:-60}" --out "$work/heldout-voice" \
    --exclude "$work/corpus/train.jsonl" --exclude "$work/asterisk-dev" \
    --exclude "$work/asterisk-test"
fi

stamp "training for $minutes min, selection on the real-speech dev split ${INIT:+(warm start from $INIT)}"
# shellcheck disable=SC2086  # SETTINGS is a list of options
ks train --config "$config" --out-dir "$work/run" --max-minutes "$minutes" --no-progress "${init[@]}" \
  --set "corpus=$work/corpus" --set "cache_dir=$work/features" --set "language=$lang" \
  --set "dev_manifest=$work/asterisk-dev/manifest.jsonl" ${SETTINGS:-}

stamp "export to $out"
testsets=(--testset "$work/asterisk-test")
if [ "$lang" = en ]; then
  testsets+=(--testset "$(dirname "$0")/../../examples/testset")
else
  testsets+=(--testset "$work/heldout-voice")
fi
reference=()
if [ -n "${REFERENCE_CLIPS:-}" ]; then reference=(--reference-clips "$REFERENCE_CLIPS"); fi
ks export "$work/run/best.pt" "$out" --int8 --language "$lang" "${testsets[@]}" "${reference[@]}" \
  --name "${NAME:-kubescribe-realvoices-$lang}" --version "${VERSION:-0.1.0}" \
  --description "${DESCRIPTION:-}"
mkdir -p "$out/training"
cp "$work/run/history.jsonl" "$work/corpus/corpus.json" "$out/training/"
stamp "done"
