"""Every example model's card is the rendering of its measured results (no hand edits), leads
with the real-speech figure the manifest declares, and the README quotes that figure first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kubescribe_modeling.card import render
from kubescribe_runtime.manifest import ArtifactManifest

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p.parent for p in (ROOT / "examples" / "models").glob("*/results.json"))


def test_there_are_models_in_two_languages() -> None:
    languages = {ArtifactManifest.load(m).languages[0] for m in MODELS}
    assert {"en", "es"} <= languages


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_card_is_the_report_rendered(model: Path) -> None:
    results = json.loads((model / "results.json").read_text(encoding="utf-8"))
    manifest = ArtifactManifest.load(model)
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card == render(results, manifest), (
        f"{model}/MODEL_CARD.md differs from `python -m kubescribe_modeling.card`'s rendering "
        "of results.json: regenerate it, never edit it by hand"
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_card_and_manifest_lead_with_the_same_real_speech_figure(model: Path) -> None:
    results = json.loads((model / "results.json").read_text(encoding="utf-8"))
    manifest = ArtifactManifest.load(model)
    (measured, *_) = results["real_speech"]["results"]
    first = manifest.evaluation[0]
    assert (first.speech, first.test_set, first.model_file) == (
        "real", measured["test_set"], measured["model_file"]
    )  # fmt: skip
    assert (first.wer, first.utterances) == (measured["wer"], measured["utterances"])
    assert first.language == manifest.languages[0] == measured["language"]
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    percents = re.findall(r"(\d+\.\d) %", card)
    assert percents[0] == f"{100 * measured['wer']:.1f}", "the card's first figure is real speech"


def test_readme_quotes_the_demo_models_real_speech_figure_first() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("The bundled demo model") :].split("\n\n")[0]
    (real,) = [
        e
        for e in ArtifactManifest.load(ROOT / "examples/models/demo").evaluation
        if e.speech == "real" and e.model_file == "model.onnx"
    ]
    first = re.search(r"(\d+(?:\.\d)?) ?% WER", paragraph)
    assert first is not None and abs(float(first.group(1)) - 100 * real.wer) < 0.6, paragraph
