#!/usr/bin/env bash
# The full real-voices run for one lent GPU, English and Spanish side by side, as one command
# (the device lease allows 10 minutes a command):
#
#   modeling/recipes/real-voices-gpu.sh OUT [TRAIN_MINUTES]
#
# Prepared here, not yet run on a GPU: the CPU runs of modeling/recipes/real-voices.sh (the same
# steps) are what has been checked. The device machine reaches no network, so carry Debian's
# packages along and name their folder in DEBS (made here with
#   mkdir -p runs/debs && (cd runs/debs && apt-get download espeak-ng espeak-ng-data \
#     libespeak-ng1 libpcaudio0 libsonic0 sox libsox3 libsox-fmt-base flite libflite1 \
#     asterisk-core-sounds-en asterisk-core-sounds-en-wav asterisk-core-sounds-es \
#     asterisk-core-sounds-es-wav)
# and `carry: [runs/debs, .venv]`); they are installed with dpkg first.
#
# Steps: both corpora rendered at once on every core (UTTERANCES clips each, default 12000,
# about 10 hours a language), then both models (configs/realvoices-gpu.yaml, the demo model's
# size) trained side by side for TRAIN_MINUTES (default 6) with model selection on each
# language's real-speech dev split, then each exported to OUT/LANG with its real-speech WER.
# Both warm-start from the shipped English demo model (INIT, default examples/models/demo; at
# a lower peak rate): on CPU the warm start learned Spanish in minutes where training from
# scratch never left CTC's all-blank phase. INIT= (empty) trains from scratch.
# Logs: OUT/LANG.log.
set -euo pipefail

out=$1
minutes=${2:-6}
py=${PYTHON:-python3}
recipes=$(cd "$(dirname "$0")" && pwd)
cores=$(nproc)
init=${INIT-$recipes/../../examples/models/demo}
warm=""
if [ -n "$init" ]; then warm="--set lr=0.001 --set warmup_steps=100"; fi
mkdir -p "$out"

if [ -n "${DEBS:-}" ]; then
  dpkg -i "$DEBS"/*.deb >/dev/null
fi
for tool in espeak-ng sox flite; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: carry Debian's packages (DEBS)" >&2; exit 1; }
done

for lang in en es; do
  (
    WORK=/tmp/realvoices-$lang PYTHON=$py WORKERS=$((cores / 2)) INIT=$init \
      UTTERANCES=${UTTERANCES:-12000} CONFIG="$recipes/../kubescribe_modeling/configs/realvoices-gpu.yaml" \
      SETTINGS="--set device=cuda --set feature_workers=$((cores / 2)) $warm" \
      NAME=kubescribe-realvoices-$lang VERSION=${VERSION:-0.1.0} \
      bash "$recipes/real-voices.sh" "$lang" "$out/$lang" "$minutes" >"$out/$lang.log" 2>&1 \
      && status=0 || status=$?
    echo "exit status $status" >>"$out/$lang.log"
  ) &
done
wait
tail -n 5 "$out"/en.log "$out"/es.log
