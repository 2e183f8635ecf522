"""A runtime behind a shared endpoint answers only for its own model names
(``--served-model-names``) and lists every model behind the endpoint (``--model-catalog``):
the real server process and the official openai client (issue 19.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from kubescribe_runtime.model_names import ModelNames, parse_catalog
from rt_fixtures import encode, tone_sentence
from rt_realtime import raw_connect, recv_json
from rt_server import ServerProcess, post, running
from websockets.exceptions import InvalidStatus

NAMES = ("tone-en", "support-en")
CATALOG = {
    "models": [
        {"name": "tone-en", "names": ["support-en"], "version": "1.0.0"},
        {
            "name": "demo-es",
            "names": ["support-es"],
            "version": "2.1.0",
            "defaultForLanguages": ["es"],
        },
    ]
}
NOT_FOUND = {
    "message": "The model `whisper-1` does not exist or you do not have access to it.",
    "type": "invalid_request_error",
    "param": "model",
    "code": "model_not_found",
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "models.json"
    path.write_text(json.dumps(CATALOG))
    return path


@pytest.fixture(scope="module")
def server(
    tone_dir: Path, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running(
        tone_dir,
        tmp_path_factory.mktemp("logs"),
        "--served-model-names", ",".join(NAMES),
        env={"KUBESCRIBE_MODEL_CATALOG": str(catalog)},
    ) as process:  # fmt: skip
        yield process


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


AUDIO = encode(tone_sentence("lo hi"))


def test_an_unknown_model_is_openais_404(server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        client(server).audio.transcriptions.create(
            model="whisper-1", file=("a.wav", AUDIO, "audio/wav")
        )
    assert refused.value.status_code == 404
    assert refused.value.body == NOT_FOUND
    # The streamed form too, before any event.
    answer = post(server.url, AUDIO, model="whisper-1", stream="true")
    assert (answer.status_code, answer.json()["error"]) == (404, NOT_FOUND)


@pytest.mark.parametrize("name", [*NAMES, ""])
def test_every_served_name_is_accepted_and_no_name_too(server: ServerProcess, name: str) -> None:
    answer = post(server.url, AUDIO, model=name)
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == "low high"


def test_models_list_shows_the_whole_catalogue(server: ServerProcess) -> None:
    listed = {m.id: m for m in client(server).models.list()}
    assert list(listed) == ["tone-en", "support-en", "demo-es", "support-es"]
    own = listed["support-en"].model_dump()
    assert (own["root"], own["version"]) == ("tone-demo", "1.0.0")  # the loaded artifact's
    other = listed["support-es"].model_dump()
    assert (other["root"], other["version"], other["default_for_languages"]) == (
        "demo-es",
        "2.1.0",
        ["es"],
    )
    assert client(server).models.retrieve("support-es").id == "support-es"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("whisper-1")


def test_realtime_refuses_another_models_name_before_the_upgrade(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:  # noqa: SIM117
        with client(server).realtime.connect(
            model="whisper-1", extra_query={"intent": "transcription"}
        ):
            pass
    response = refused.value.response
    assert response.status_code == 404
    assert json.loads(response.body)["error"]["code"] == "model_not_found"
    with client(server).realtime.connect(
        model="support-en", extra_query={"intent": "transcription"}
    ) as conn:
        assert conn.recv().type == "session.created"


def test_a_session_update_naming_another_model_is_an_error_event(server: ServerProcess) -> None:
    with raw_connect(server.url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        update = {"type": "transcription", "audio": {"input": {"transcription": {}}}}
        for model, expected in (("whisper-1", "error"), ("support-en", "session.updated")):
            update["audio"]["input"]["transcription"] = {"model": model}  # type: ignore[index]
            ws.send(json.dumps({"type": "session.update", "session": update}))
            event = recv_json(ws)
            assert event["type"] == expected, event
            if expected == "error":
                assert event["error"]["code"] == "model_not_found"


def test_a_client_secret_for_another_models_session_is_openais_404(server: ServerProcess) -> None:
    def session(model: str) -> dict[str, object]:
        return {"type": "transcription", "audio": {"input": {"transcription": {"model": model}}}}

    with pytest.raises(openai.NotFoundError) as refused:
        client(server).realtime.client_secrets.create(session=session("whisper-1"))  # type: ignore[arg-type]
    assert refused.value.body["code"] == "model_not_found"  # type: ignore[index]
    minted = client(server).realtime.client_secrets.create(session=session("support-en"))  # type: ignore[arg-type]
    assert minted.value


def test_a_changed_catalogue_shows_without_a_restart(server: ServerProcess, catalog: Path) -> None:
    changed = {"models": [*CATALOG["models"], {"name": "demo-fr", "version": "1"}]}
    catalog.write_text(json.dumps(changed))
    try:
        ids = [m["id"] for m in requests.get(server.url + "/v1/models", timeout=10).json()["data"]]
        assert "demo-fr" in ids
    finally:
        catalog.write_text(json.dumps(CATALOG))


# ---------------------------------------------------------------------------- pure


def test_unset_names_accept_any_model() -> None:
    names = ModelNames()
    assert names.accepts("whisper-1") and names.accepts(None)
    assert [c["id"] for c in names.cards({"id": "demo", "version": "1"})] == ["demo"]


@pytest.mark.parametrize(
    "text",
    ["[]", '{"models": {}}', '{"models": [{"names": ["x"]}]}', "not json"],
)
def test_a_bad_catalogue_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_catalog(text)


def test_a_directory_of_entries_is_a_catalogue(tmp_path: Path) -> None:
    """(As the operator's ConfigMap is mounted: a file per model, and the kubelet's ..data.)"""
    for entry in CATALOG["models"]:
        (tmp_path / f"{entry['name']}.json").write_text(json.dumps(entry))
    (tmp_path / "..data").mkdir()
    names = ModelNames(("a",), tmp_path)
    assert [c["id"] for c in names.cards({"id": "x"})] == [
        "a", "demo-es", "support-en", "support-es", "tone-en",
    ]  # fmt: skip


def test_an_unreadable_catalogue_leaves_the_own_names(tmp_path: Path) -> None:
    bad = tmp_path / "models.json"
    bad.write_text("{")
    names = ModelNames(("a",), bad)
    assert [c["id"] for c in names.cards({"id": "demo"})] == ["a"]
    assert [c["id"] for c in ModelNames(("a",), tmp_path / "missing").cards({"id": "d"})] == ["a"]
