#!/usr/bin/env bash
# How examples/models/demo-es 0.2.0 was made and measured (run from the repository root; `make
# tools` installs espeak-ng, sox and the Asterisk prompts): the exact commands, on the shared
# 2-core CI machine, one torch thread, no GPU. The run's scratch directory was /tmp/team/F-es,
# linked as runs/realvoices/es for the report (the paths the card shows).
set -euo pipefail
W=runs/realvoices/es
# 1. the real-speech dev and test sets, then 4000 training clips (espeak-ng Spanish voices and
#    variants, 80 % through telephone channels), none of them saying a dev or test sentence
python -m kubescribe data --asterisk es --split dev --out $W/asterisk-dev
python -m kubescribe data --asterisk es --split test --out $W/asterisk-test
python -m kubescribe_modeling.data.realvoices --language es --utterances 4000 --out $W/corpus \
  --held $W/asterisk-dev --held $W/asterisk-test
# 2. the recipe, warm-started from the English demo model (INIT: its 4.75 M weights, sizes and
#    character head recovered from examples/models/demo/model.onnx; the default warm config,
#    configs/realvoices-warm-cpu.yaml, of which the run passed a byte-identical copy as CONFIG):
#    the dev/test sets again (same result), the corpus kept (its "2400 clips" banner is the
#    unset UTTERANCES default; the 4000 rendered clips were used), a clean synthetic test set
#    of 60 clips in two held-out voices (es+f4, es-419+m5), 40 minutes of fine-tuning with
#    selection on the real-speech dev split, export (int8 too, both WERs and the quality
#    gate's reference clips in kubescribe.yaml) and the run's history.jsonl and corpus.json
WORK=$W PYTHON=.venv/bin/python INIT=examples/models/demo NAME=kubescribe-demo-es VERSION=0.2.0 \
  DESCRIPTION="Spanish Conformer-CTC (4.75 M parameters, characters): kubescribe's English demo model fine-tuned for 40 minutes on one shared CPU thread on synthetic Spanish speech (espeak-ng voices through telephone channels); kubescribe's Spanish example model." \
  nice -n 10 bash modeling/recipes/real-voices.sh es $W/out 40
# 3. the artifact into the examples (reference/README.md, the clips' attribution, stays)
cp $W/out/{model.onnx,model.int8.onnx,tokens.txt,vocab.txt,config.json,kubescribe.yaml} \
  examples/models/demo-es/
cp $W/out/reference/*.wav examples/models/demo-es/reference/
cp $W/out/training/{history.jsonl,corpus.json} examples/models/demo-es/training/
# 4. the card's tables: report (the real-speech figure; size, speed and WER on the held-out-voice
#    synthetic set), notes, then the card
python -m kubescribe_modeling.report --testset $W/heldout-voice \
  --real-speech examples/models/demo-es --real-testset $W/asterisk-test \
  --demo-run $W/run --commands examples/models/demo-es/training/report.sh \
  --train-machine "CPU only: one torch thread on the shared 2-core CI machine (x86_64), loaded by other jobs" \
  --row "demo-es=examples/models/demo-es@$W/run" \
  --row "demo-es int8=examples/models/demo-es:model.int8.onnx" \
  --out examples/models/demo-es/results.json
python -m kubescribe_modeling.report --merge --out examples/models/demo-es/results.json \
  --note "..."  # the card's notes, verbatim as results.json holds them (one --note each)
python -m kubescribe_modeling.card examples/models/demo-es/results.json \
  --manifest examples/models/demo-es/kubescribe.yaml --out examples/models/demo-es/MODEL_CARD.md
