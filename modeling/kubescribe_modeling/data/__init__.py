"""Synthetic speech corpus: text sources, espeak-ng synthesis, augmentation and splits."""
