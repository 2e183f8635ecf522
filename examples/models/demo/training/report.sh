#!/usr/bin/env bash
# The exact command behind ../results.json and ../MODEL_CARD.md (run from the repository root,
# with the GPU run's checkpoints exported under runs/gpu/art and its histories under runs/gpu/runs).
set -euo pipefail
python -m kubescribe_modeling.report --testset examples/testset \
  --row "demo model (final)=examples/models/demo@runs/gpu/runs/demo" \
  --row "demo model int8=examples/models/demo:model.int8.onnx" \
  --row "teacher (demo run at 3.7 min)=runs/gpu/art/teacher@runs/gpu/runs/teacher" \
  --row "student from scratch=runs/gpu/art/student@runs/gpu/runs/student" \
  --row "distilled student=runs/gpu/art/distilled@runs/gpu/runs/distilled" \
  --row "pruned teacher (-50 % FF) + fine-tune=runs/gpu/art/pruned@runs/gpu/runs/pruned" \
  --row "teacher int8=runs/gpu/art/teacher:model.int8.onnx" \
  --interop examples/models/demo --full-testset data/corpus/test.jsonl \
  --corpus-info examples/models/demo/training/corpus.json --demo-run runs/gpu/runs/demo \
  --train-machine "one NVIDIA H200 (a lent device; PyTorch 2.11 + CUDA 13, TF32 matmuls; 16 CPU cores for the data)" \
  --note "Targets of the issue: held-out template sentences in unseen voices 3.2 % WER on the full test split (300 utterances) and 4.7 % on the committed test set (30): target <= 5 % met. Independently written everyday English 21.0 % on the full split (298 utterances) and 17.0 % on the committed set (32): target <= 20 % met on the committed set, missed by 1.0 point on the full split." \
  --note "GPU time: 15 minutes of one lent H200 in all. The recipe's single 9-minute command rendered the 42.6 h corpus in 76 s on 16 cores and trained two phases of 3.7 and 2.6 minutes; the demo model is the char teacher resumed on the warm machine to 7.4 minutes (20 epochs, 5488 steps of 60,000-frame batches). Its dev WER was still falling (27.6 % at 3.7 min, 21.1 % at 7.3 min): more GPU time would buy more accuracy. Records: examples/models/demo/training/." \
  --note "teacher = the char teacher at the end of phase 1 (3.7 minutes, dev WER 27.6 %). The student from scratch, the distilled student (KL weight 0.5, temperature 2) and the pruned teacher (half the units of every feed-forward layer removed, then fine-tuned at lr 5e-4) trained side by side on the same GPU for 2.6 minutes each; distillation gained less than a point over the same student from scratch in that budget (29.2 % -> 28.5 %)." \
  --note "A BPE-256 twin of the teacher (same sizes, same 3.7 minutes, beside it) reached 59.5 % dev WER against 27.6 % for characters, so the demo model uses characters; the BPE checkpoint was not kept." \
  --note "The full test split data/corpus/test.jsonl is rendered here by kubescribe data --hours 18 --seed 0; its 598 entries (sentences, voices, speeds, pitches) equal the test split of the 40 h plan rendered on the GPU host, entry by entry. sherpa-onnx (Kaldi-style features) scored 8.7 % on the committed set against kubescribe's 10.6 %, but 10.7 % against 10.3 % on the full split: on 62 utterances the gap is noise." \
  --note "A CPU fine-tune of the demo model on the 18 h corpus here (lr 4e-4, one thread) ran 135 steps in 9 minutes and raised dev WER from 17.5 % to 19.3 %; it was stopped and not used." \
  --out examples/models/demo/results.json
# The honest held-out figures (added after the release, on CPU): the held-out sets (the full test
# split, every independent dev sentence in each held-out voice, and both as 8 kHz μ-law calls),
# then WER by voice, text and channel into results.json. plan.jsonl is 2.0.0's training plan,
# re-made by the code it was trained with (sha256 bbf29e88..., as README.md here records):
#   mkdir /tmp/ks-2.0.0 && git archive bb5c0d0 modeling | tar -x -C /tmp/ks-2.0.0
#   PYTHONPATH=/tmp/ks-2.0.0/modeling python -m kubescribe data --out /tmp/ks-2.0.0/corpus \
#     --hours 40 --seed 0 --template-fraction 0.35 --plan-out plan.jsonl
python -m kubescribe_modeling.heldout render --out data/heldout
python -m kubescribe_modeling.heldout measure examples/models/demo --data data/heldout \
  --train-plan plan.jsonl --weights-tuned-on test --results examples/models/demo/results.json
# Real recorded speech first (issue 21): the Asterisk English prompts' test split (make tools
# installs the packages), through the runtime, into results.json; the card leads with it.
python -m kubescribe data --asterisk en --split test --out data/asterisk/en-test
python -m kubescribe_modeling.report --merge --real-speech examples/models/demo \
  --real-testset data/asterisk/en-test --twin-voice en-gb+m5 --out examples/models/demo/results.json
python -m kubescribe evaluate examples/models/demo --testset data/asterisk/en-test --declare
python -m kubescribe_modeling.card examples/models/demo/results.json \
  --manifest examples/models/demo/kubescribe.yaml --out examples/models/demo/MODEL_CARD.md
