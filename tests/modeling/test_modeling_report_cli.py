from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubescribe_modeling.artifact import ExportReport
from kubescribe_modeling.card import render
from kubescribe_modeling.checkpoint import Checkpoint
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.model import count_parameters
from kubescribe_modeling.report import RowSpec, measure_row, onnx_parameters, training_summary
from kubescribe_runtime.manifest import ArtifactManifest

from kubescribe.cli import main


def test_row_specs_parse() -> None:
    assert RowSpec.parse("int8=runs/a:model.int8.onnx@runs/r") == RowSpec(
        "int8", Path("runs/a"), "model.int8.onnx", Path("runs/r")
    )
    assert RowSpec.parse("t=art") == RowSpec("t", Path("art"))
    with pytest.raises(ModelingError, match="bad row"):
        RowSpec.parse("no-equals-sign")


def test_onnx_parameter_count_matches_the_torch_model(
    tiny_artifact: ExportReport, tiny_checkpoint: Checkpoint
) -> None:
    expected = count_parameters(tiny_checkpoint.build_model())
    assert onnx_parameters(tiny_artifact.out_dir / "model.onnx") == expected


def test_measured_row_and_card(tiny_artifact: ExportReport, tiny_testset: Path) -> None:
    row = measure_row(RowSpec("tiny", tiny_artifact.out_dir), tiny_testset)
    assert row["onnx_mb"] > 0 and row["rtf"] > 0 and row["wer"] >= 0
    assert set(row) >= {"wer_template", "wer_independent", "parameters"}
    manifest = ArtifactManifest.load(tiny_artifact.out_dir)
    card = render({"testset": "t", "utterances": 4, "rows": [row]}, manifest)
    assert f"{row['parameters'] / 1e6:.2f} M" in card
    assert f"{100 * row['wer']:.1f} %" in card


def test_training_summary_reads_the_history(tmp_path: Path) -> None:
    lines = [
        {"epoch": 1, "complete": False, "step": 5, "dev_wer": 0.9, "minutes": 1.0},
        {"epoch": 1, "complete": True, "step": 9, "dev_wer": 0.5, "minutes": 2.04},
        {"epoch": 2, "complete": False, "step": 12, "dev_wer": 0.6, "minutes": 3.0},
    ]
    (tmp_path / "history.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert training_summary(tmp_path) == {
        "train_minutes": 3.0, "steps": 12, "epochs_completed": 1, "best_dev_wer": 0.5,
    }  # fmt: skip


def test_cli_reports_bad_inputs_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "configuration file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: {d_model: 30, n_heads: 4}\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 1
    assert "not divisible" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.pt"), str(tmp_path / "out")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--testset", str(tmp_path)]) == 1
    assert "no model.onnx" in capsys.readouterr().err


def test_cli_export_and_evaluate(
    tiny_checkpoint: Checkpoint,
    tiny_testset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kubescribe_modeling.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", tiny_checkpoint)
    assert main(["export", str(tmp_path / "m.pt"), str(tmp_path / "art"), "--int8",
                 "--testset", str(tiny_testset)]) == 0  # fmt: skip
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["parity_max_abs_diff"] < 1e-3 and "int8_wer_change" in exported
    assert main(["evaluate", str(tmp_path / "art"), "--testset", str(tiny_testset)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["wer"] == pytest.approx(exported["wer"]["model.onnx"], abs=1e-4)


def test_real_speech_section_is_measured_and_leads_the_card(
    tiny_artifact: ExportReport, tmp_path: Path
) -> None:
    from kubescribe_modeling.card_real import real_speech_section
    from kubescribe_modeling.data.asterisk import build_testset
    from kubescribe_modeling.report import measure_real_speech

    build_testset("en", tmp_path / "real", "test", 3)
    section = measure_real_speech(tiny_artifact.out_dir, [tmp_path / "real"], examples=2)
    (row,) = section["results"]
    assert (row["speech"], row["language"], row["utterances"]) == ("real", "en", 3)
    assert row["channel"] == "telephone 8 kHz" and row["license"] == "CC-BY-SA-3.0"
    assert len(row["examples"]) == 2 and row["minutes"] > 0
    manifest = ArtifactManifest.load(tiny_artifact.out_dir)
    card = render({"testset": "t", "utterances": 4, "real_speech": section}, manifest)
    assert card.index("## Real recorded speech") < card.index("## Model")
    assert f"{100 * row['wer']:.1f} %" in card.split("## Model")[0]
    assert real_speech_section({}) == []
