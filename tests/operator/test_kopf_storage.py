"""Issue 22.12: kopf's last-handled state is a digest (kubectl describe showed the whole spec as
a JSON blob), and kopf still tells a changed SpeechModel from an unchanged one."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import kopf
from kopf._cogs.structs import diffs
from kubescribe_operator.kopf_storage import DigestDiffBaseStorage

FIELD = "status.kopf.lastHandledConfiguration"


def body(version: str = "1.0", stored: str | None = None) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": "demo", "namespace": "speech", "labels": {"team": "a"}},
        "spec": {"model": {"uri": f"s3://bucket/demo/{version}", "version": version}},
        "status": {"phase": "Ready"},
    }
    if stored is not None:
        raw["status"]["kopf"] = {"lastHandledConfiguration": stored}
    return kopf.Body(cast(kopf.RawBody, raw))


def stored_by(storage: kopf.DiffBaseStorage, source: kopf.Body) -> str:
    patch = kopf.Patch()
    storage.store(body=source, patch=patch, essence=storage.build(body=source))
    value: str = patch["status"]["kopf"]["lastHandledConfiguration"]
    return value


def changed(storage: kopf.DiffBaseStorage, current: kopf.Body) -> bool:
    return bool(diffs.diff(storage.fetch(body=current), storage.build(body=current)))


def test_the_stored_state_is_short_and_holds_no_spec() -> None:
    storage = DigestDiffBaseStorage(field=FIELD)
    stored = stored_by(storage, body())
    assert len(stored) < 64 and "spec" not in stored and "s3://" not in stored
    full = stored_by(kopf.StatusDiffBaseStorage(field=FIELD), body())
    assert "s3://bucket/demo/1.0" in full  # what describe showed before


def test_changes_are_still_detected() -> None:
    storage = DigestDiffBaseStorage(field=FIELD)
    stored = stored_by(storage, body("1.0"))
    assert not changed(storage, body("1.0", stored))
    assert changed(storage, body("2.0", stored))
    relabelled = copy.deepcopy(dict(body("1.0", stored)))
    relabelled["metadata"]["labels"] = {"team": "b"}
    assert changed(storage, kopf.Body(cast(kopf.RawBody, relabelled)))
    assert storage.fetch(body=body("1.0")) is None  # never handled: a create


def test_a_full_state_from_an_older_operator_is_read_as_its_digest() -> None:
    # Upgrading the operator must not make kopf see every SpeechModel as updated.
    legacy = stored_by(kopf.StatusDiffBaseStorage(field=FIELD), body("1.0"))
    assert json.loads(legacy)["spec"]
    storage = DigestDiffBaseStorage(field=FIELD)
    assert not changed(storage, body("1.0", legacy))
    assert changed(storage, body("2.0", legacy))
