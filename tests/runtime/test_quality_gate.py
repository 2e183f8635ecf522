"""The quality gate: the manifest's reference clips (contract 2), the WER the runtime counts, the
verdict, and the real `kubescribe serve` process on the demo model (passes) and on the demo with
shuffled tokens (loads, answers 200 with nonsense, and is refused by the gate)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
import requests
from bad_artifacts import DEMO_ARTIFACT, copy_artifact, shuffled_tokens_artifact
from kubescribe_runtime import service as service_module
from kubescribe_runtime.app import create_app
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.fetch import fetch
from kubescribe_runtime.manifest import ArtifactManifest, ManifestError, sha256_file
from kubescribe_runtime.quality_gate import (
    SKIPPED_NO_CLIPS,
    declared_wer,
    judge,
    reference_wer,
    words,
)
from kubescribe_runtime.service import LOAD_FAILURE_EXIT, Service
from rt_server import ROOT, post, running, start_server, wait_until

from kubescribe.errors import KubescribeError

pytestmark = pytest.mark.xdist_group("runtime-server")

SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
SAMPLE_TEXT = (ROOT / "examples" / "audio" / "sample.txt").read_text(encoding="utf-8").strip()
FAILED = re.compile(
    r"quality gate failed: WER (\d\.\d\d) on 4 reference clips, "
    r"declared (\d\.\d\d) \+ tolerance 0\.05"
)


def test_reference_wer_counts_edits_over_reference_words() -> None:
    assert words("Hello, World! it's  ok") == ["hello", "world", "it's", "ok"]
    assert reference_wer(["a b c d"], ["a b c d"]) == 0.0
    # one substitution, one deletion over 4 + one insertion over 2: 3 edits / 6 words
    assert reference_wer(["a b c d", "e f"], ["a x c", "e f g"]) == pytest.approx(0.5)
    assert reference_wer(["a b"], [""]) == 1.0
    assert reference_wer(["a b"], ["c d e f"]) == 2.0  # nonsense may exceed 100 %


def test_the_verdict_quotes_the_measured_and_declared_wer() -> None:
    passed = judge(0.24, 0.2143, 0.05, 4)
    assert passed.passed is True
    assert passed.message == (
        "quality gate passed: WER 0.24 on 4 reference clips, declared 0.21 + tolerance 0.05"
    )
    failed = judge(0.93, 0.06, 0.05, 4)
    assert failed.passed is False
    assert failed.message == (
        "quality gate failed: WER 0.93 on 4 reference clips, declared 0.06 + tolerance 0.05"
    )
    assert judge(0.11, 0.06, 0.05, 4).passed is True  # the bound itself passes


def test_the_demo_manifest_carries_reference_clips_listed_as_files() -> None:
    manifest = ArtifactManifest.load(DEMO_ARTIFACT)
    assert manifest.reference is not None
    assert len(manifest.reference.clips) == 4
    for clip in manifest.reference.clips:
        assert manifest.files[clip.path] == clip.sha256  # fetched and verified like the rest
    assert declared_wer(manifest, "model.onnx") == manifest.reference.wer["model.onnx"]
    # a file served without a figure of its own is held to the loosest declared one
    assert declared_wer(manifest, "other.onnx") == max(manifest.reference.wer.values())


def test_a_reference_clip_must_be_an_artifact_file_and_old_manifests_stay_valid() -> None:
    text = (DEMO_ARTIFACT / "kubescribe.yaml").read_text(encoding="utf-8")
    clip = ArtifactManifest.from_yaml(text).reference.clips[0]  # type: ignore[union-attr]
    with pytest.raises(ManifestError, match=r"reference clip 'reference/01\.flac' must be listed"):
        ArtifactManifest.from_yaml(text.replace(f"  {clip.path}: {clip.sha256}\n", ""))
    old = ArtifactManifest.from_yaml(text.split("\nreference:\n")[0] + "\n")
    assert old.reference is None and declared_wer(old, "model.onnx") is None
    assert "\nreference:" not in old.to_yaml()  # written back as it was


def test_an_artifact_without_clips_skips_the_gate_and_says_so(tone_dir: Path) -> None:
    service = Service(ServeConfig(model_dir=tone_dir, vad="off"))
    service.load()
    try:
        assert service.ready
        card = create_app(service).test_client().get("/v1/models").json["data"][0]
        assert card["quality_gate"] == {"status": "skipped", "message": SKIPPED_NO_CLIPS}
    finally:
        service.close()


def test_the_demo_passes_its_gate_through_the_real_server(tmp_path: Path) -> None:
    with running(DEMO_ARTIFACT, tmp_path) as server:
        (card,) = requests.get(server.url + "/v1/models", timeout=5).json()["data"]
        gate = card["quality_gate"]
        assert gate["status"] == "passed" and gate["clips"] == 4, gate
        assert gate["measured_wer"] <= gate["declared_wer"] + 0.05
        metrics = requests.get(server.url + "/metrics", timeout=5).text
        assert "kubescribe_quality_gate_passed 1.0" in metrics
        assert f'kubescribe_quality_gate_wer_ratio{{kind="declared"}} {gate["declared_wer"]}' in (
            metrics
        )
    assert "quality gate passed: WER" in server.log()


def test_shuffled_tokens_answer_200_with_nonsense_and_are_refused_by_the_gate(
    tmp_path: Path,
) -> None:
    shuffled = tmp_path / "shuffled"
    shuffled_tokens_artifact(shuffled)
    audio = SAMPLE.read_bytes()
    # Without the gate it loads and answers, every probe green: nothing else would stop it.
    with running(shuffled, tmp_path, "--quality-gate", "off") as server:
        answer = post(server.url, audio, "sample.wav", model="kubescribe-demo-en")
        assert answer.status_code == 200
        assert reference_wer([SAMPLE_TEXT], [answer.json()["text"]]) > 0.9, answer.json()
    # With it (the default), the pod never turns ready, and /readyz says why.
    server = start_server(shuffled, tmp_path, ready=False)
    try:
        readyz = server.url + "/readyz"
        wait_until(
            lambda: requests.get(readyz, timeout=5).json()["status"] != "loading",
            "the quality gate's verdict on /readyz",
            step=0.1,
        )
        answer = requests.get(readyz, timeout=5)
        assert (answer.status_code, answer.json()["status"]) == (503, "failed")
        match = FAILED.fullmatch(answer.json()["reason"])
        assert match, answer.json()
        measured, declared = float(match[1]), float(match[2])
        assert measured > 0.9 and declared == round(
            ArtifactManifest.load(shuffled).reference.wer["model.onnx"],  # type: ignore[union-attr]
            2,
        )
        assert post(server.url, audio, "sample.wav").status_code == 503
    finally:
        assert server.stop() == 0
    # In a pod (--exit-on-load-failure): the process ends with the verdict as its last words.
    try:
        server = start_server(shuffled, tmp_path, "--exit-on-load-failure", ready=False)
    except RuntimeError as exited:  # it failed before /healthz first answered
        status, log = str(exited).split(":", 1)
        assert status == "server exited with 3", status
    else:
        assert server.process.wait(60) == 3, server.log()
        log = server.log()
    assert "exiting: quality gate failed: WER" in log, log
    assert FAILED.search(log), log


def test_in_a_pod_the_verdict_is_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the kubelet reports and the operator quotes: the verdict alone, both WERs in it.
    shuffled = tmp_path / "shuffled"
    shuffled_tokens_artifact(shuffled)
    message = tmp_path / "termination-log"
    monkeypatch.setattr(service_module, "TERMINATION_LOG", message)
    monkeypatch.setattr(logging, "shutdown", lambda: None)

    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_)
    config = ServeConfig(model_dir=shuffled, threads=1, exit_on_load_failure=True)
    with pytest.raises(SystemExit) as exited:
        Service(config).load()
    assert exited.value.code == LOAD_FAILURE_EXIT
    assert FAILED.fullmatch(message.read_text(encoding="utf-8").strip()), message.read_text()


def test_fetch_brings_the_clips_and_refuses_a_tampered_one(tmp_path: Path) -> None:
    result = fetch(str(DEMO_ARTIFACT), tmp_path / "fetched")
    manifest = ArtifactManifest.load(tmp_path / "fetched")
    assert manifest.reference is not None
    for clip in manifest.reference.clips:
        assert sha256_file(tmp_path / "fetched" / clip.path) == clip.sha256
    assert result.digest == sha256_file(DEMO_ARTIFACT / "kubescribe.yaml")
    tampered = tmp_path / "tampered"
    copy_artifact(DEMO_ARTIFACT, tampered)
    with (tampered / "reference" / "02.flac").open("ab") as clip_file:
        clip_file.write(b"\0")
    with pytest.raises(KubescribeError, match=r"reference/02\.flac"):
        fetch(str(tampered), tmp_path / "refused")
