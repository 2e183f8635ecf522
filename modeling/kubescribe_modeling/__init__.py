"""kubescribe modeling toolkit: Conformer-CTC training, distillation, pruning, export, import."""
