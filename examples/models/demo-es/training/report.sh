#!/usr/bin/env bash
# How examples/models/demo-es was made and measured (run from the repository root; `make tools`
# installs espeak-ng, sox, flite and the Asterisk prompts): the exact commands, on the shared
# 2-core CI machine with one torch thread.
set -euo pipefail
# 1. the recipe: real-speech dev/test sets; 2400 training clips (espeak-ng Spanish voices through
#    telephone channels; rendered first by the same command the recipe runs, into
#    data/realvoices-es, linked as the recipe's corpus); 12 minutes of training with selection
#    on the real-speech dev split; export with the real-speech test WER in kubescribe.yaml
python -m kubescribe_modeling.data.realvoices --language es --utterances 2400 \
  --out data/realvoices-es --held data/asterisk/es-dev --held data/asterisk/es-test
mkdir -p runs/realvoices/es && ln -sfn "$PWD/data/realvoices-es" runs/realvoices/es/corpus
WORK=runs/realvoices/es PYTHON=.venv/bin/python NAME=kubescribe-demo-es VERSION=0.1.0 \
  DESCRIPTION="Spanish Conformer-CTC (1 M parameters, characters) trained for 12 minutes on one shared CPU thread on synthetic speech through telephone channels; kubescribe's Spanish example model." \
  modeling/recipes/real-voices.sh es examples/models/demo-es 12
# 2. the card's tables: report (the real-speech figure, size and speed), notes, then the card
python -m kubescribe_modeling.report --testset runs/realvoices/es/asterisk-test \
  --real-speech examples/models/demo-es --real-testset runs/realvoices/es/asterisk-test \
  --demo-run runs/realvoices/es/run --commands examples/models/demo-es/training/report.sh \
  --train-machine "CPU only: one torch thread on the shared 2-core CI machine (x86_64), loaded by other jobs" \
  --row "demo-es=examples/models/demo-es@runs/realvoices/es/run" \
  --row "demo-es int8=examples/models/demo-es:model.int8.onnx" \
  --out examples/models/demo-es/results.json
python -m kubescribe_modeling.report --merge --out examples/models/demo-es/results.json \
  --commands examples/models/demo-es/training/report.sh --note "..."  # the card's notes, verbatim
python -m kubescribe_modeling.card examples/models/demo-es/results.json \
  --manifest examples/models/demo-es/kubescribe.yaml --out examples/models/demo-es/MODEL_CARD.md
