"""What the held-out figures stand on: unseen speakers and text never used to tune or train."""

from __future__ import annotations

import pytest
from kubescribe_modeling.data.synth import read_variant
from kubescribe_modeling.data.voices import (
    HELD_OUT_VARIANTS,
    TRAIN_VARIANTS,
    formant_twins,
    parse_formants,
)

# --- voices ----------------------------------------------------------------------------------


def _espeak_formants(variants: set[str]) -> dict:
    return {v: parse_formants(read_variant(v)) for v in variants}


@pytest.mark.parametrize(
    ("train", "twins"),
    [
        (TRAIN_VARIANTS, []),
        # What trained demo model 2.0.0: aunty is f4 at another pitch.
        (("m1", "aunty", "linda"), [("aunty", "f4")]),
    ],
    ids=["shipped-train-variants", "aunty-is-caught"],
)
def test_no_train_variant_has_the_formants_of_a_held_out_one(
    train: tuple[str, ...], twins: list[tuple[str, str]]
) -> None:
    formants = _espeak_formants({*train, *HELD_OUT_VARIANTS})
    assert formant_twins(formants, train, sorted(HELD_OUT_VARIANTS)) == twins


def test_formants_are_read_from_the_variant_file() -> None:
    text = "name x\nformant 0 88 85 154\nformant 1 115  80 160 -20\n\tformant 8 110 75 150\npitch 1 2"
    assert parse_formants(text) == {0: (88, 85, 154), 1: (115, 80, 160, -20), 8: (110, 75, 150)}
    # A twin needs all of formants 1-8 equal; one differing formant is another speaker.
    same = {k: (100 + k, 80, 150) for k in range(1, 9)}
    other = {**same, 3: (99, 80, 150)}
    table = {"a": same, "b": {**same, 0: (1, 1, 1)}, "c": other, "h": same}
    assert formant_twins(table, ["a", "b", "c"], ["h"]) == [("a", "h"), ("b", "h")]
