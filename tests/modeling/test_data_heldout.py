"""What the held-out figures stand on: unseen speakers and text never used to tune or train."""

from __future__ import annotations

import itertools
import string

import pytest
from kubescribe_modeling.data import resources
from kubescribe_modeling.data.open_vocab import DRAW_WEIGHTS, Vocabulary, everyday_sentences
from kubescribe_modeling.data.plan import (
    TEST_TEMPLATE_POOL,
    CorpusConfig,
    held_out_template_sentences,
    independent_sentences,
    plan_corpus,
)
from kubescribe_modeling.data.synth import read_variant
from kubescribe_modeling.data.tuning import (
    DEV_RESOURCE,
    dev_sentences,
    oov_rate,
    tune_draw_weights,
)
from kubescribe_modeling.data.voices import (
    HELD_OUT_VARIANTS,
    TRAIN_VARIANTS,
    formant_twins,
    parse_formants,
)
from kubescribe_modeling.text import normalize_text

TEST_RESOURCE = "independent_test.txt"

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
    text = (
        "name x\nformant 0 88 85 154\nformant 1 115  80 160 -20\n\tformant 8 110 75 150\npitch 1 2"
    )
    assert parse_formants(text) == {0: (88, 85, 154), 1: (115, 80, 160, -20), 8: (110, 75, 150)}
    # A twin needs all of formants 1-8 equal; one differing formant is another speaker.
    same = {k: (100 + k, 80, 150) for k in range(1, 9)}
    other = {**same, 3: (99, 80, 150)}
    table = {"a": same, "b": {**same, 0: (1, 1, 1)}, "c": other, "h": same}
    assert formant_twins(table, ["a", "b", "c"], ["h"]) == [("a", "h"), ("b", "h")]


# --- the dev split and the tuning that reads it ---------------------------------------------


def test_dev_split_is_new_text_that_nothing_trains_or_tests_on() -> None:
    dev = dev_sentences()
    assert len(dev) >= 100 and len(set(dev)) == len(dev)
    written_for_training = {normalize_text(s) for s in everyday_sentences()}
    test_text = {*independent_sentences(), *held_out_template_sentences(TEST_TEMPLATE_POOL)}
    assert not set(dev) & written_for_training
    assert not set(dev) & test_text
    # A corpus never trains on them (its exclusion list holds them, so not even by chance).
    plan = plan_corpus(CorpusConfig(utterances=2000, test_templates=20, seed=3))
    assert not set(dev) & {u.text for u in plan if u.split != "test"}


def test_tuning_reads_the_dev_split_and_never_the_test_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read: list[str] = []
    real_read = resources._read_text

    def watched(name: str) -> str:
        read.append(name)
        if name == TEST_RESOURCE:
            raise AssertionError("tuning opened the independent test split")
        return real_read(name)

    resources.load_lines.cache_clear()
    monkeypatch.setattr(resources, "_read_text", watched)
    try:
        result = tune_draw_weights(budget_words=2000, step=0.5, repeats=1)
    finally:
        resources.load_lines.cache_clear()
    assert DEV_RESOURCE in read and TEST_RESOURCE not in read
    assert result.weights in {w for w, _ in result.table}


def test_shipped_draw_weights_are_what_tuning_on_dev_picks() -> None:
    result = tune_draw_weights()
    assert result.weights == DRAW_WEIGHTS
    assert result.oov == min(oov for _, oov in result.table)


def test_tuning_prefers_the_weights_that_cover_the_dev_words() -> None:
    # 26 words; the true draw almost always says "a", the core only "a" or "b", the flattened
    # draw reaches every word: a dev split of rare words wants the flattened draw.
    words = tuple(string.ascii_lowercase)
    true = [1000.0] + [0.001] * 25
    vocab = Vocabulary(
        words=words,
        cum_true=tuple(itertools.accumulate(true)),
        cum_core=(1.0, 2.0),
        cum_flat=tuple(float(i + 1) for i in range(26)),
    )
    result = tune_draw_weights(
        ["x y z", "q r s"], vocab=vocab, written=["a b"], budget_words=500, min_true=0
    )
    assert result.weights == (0.0, 0.0, 1.0) and result.oov == 0.0
    assert dict(result.table)[(1.0, 0.0, 0.0)] == 1.0
    assert oov_rate({"x"}, ["x y", "x"]) == pytest.approx(1 / 3)
