"""The transcription form, parsed without a server: what is accepted, and which field a
refusal names."""

from __future__ import annotations

import pytest
from kubescribe_runtime.errors import ApiError
from kubescribe_runtime.forms import TranscriptionForm, parse_transcription_form
from werkzeug.datastructures import MultiDict

MULTIPART = "multipart/form-data"


def parse(mimetype: str = MULTIPART, has_file: bool = True, **fields: str) -> TranscriptionForm:
    form = MultiDict([(k.replace("__", "[]").rstrip("_"), v) for k, v in fields.items()])
    return parse_transcription_form(mimetype, form, has_file, lambda: ["en", "de"])


def test_defaults_and_a_full_form() -> None:
    assert parse() == TranscriptionForm("json", False, "mix", (), "")
    form = parse(
        response_format="verbose_json",
        timestamp_granularities__="word",
        language="en-US",
        temperature="0.2",
    )
    assert form == TranscriptionForm("verbose_json", False, "mix", ("word",), "en-US")
    assert parse(stream="true", response_format="text").stream


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"mimetype": "application/json"}, 415, "unsupported_content_type", None),
        ({"has_file": False}, 400, "missing_file", "file"),
        ({"response_format": "xml"}, 400, "invalid_response_format", "response_format"),
        ({"temperature": "2"}, 400, "invalid_temperature", "temperature"),
        ({"temperature": "hot"}, 400, "invalid_temperature", "temperature"),
        ({"stream": "yes"}, 400, "invalid_stream", "stream"),
        ({"channel_mode": "left"}, 400, "invalid_channel_mode", "channel_mode"),
        (
            {"stream": "true", "channel_mode": "separate"},
            400,
            "invalid_channel_mode",
            "channel_mode",
        ),
        ({"stream": "true", "response_format": "srt"}, 400, "invalid_response_format", None),
        ({"timestamp_granularities__": "char"}, 400, "invalid_timestamp_granularities", None),
        ({"timestamp_granularities__": "word"}, 400, "invalid_timestamp_granularities", None),
        ({"language": "fr"}, 400, "unsupported_language", "language"),
    ],
)
def test_refusals_name_their_field(
    kwargs: dict[str, object], status: int, code: str, param: str | None
) -> None:
    with pytest.raises(ApiError) as refused:
        parse(**kwargs)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (status, code)
    if param is not None:
        assert refused.value.param == param


def test_languages_are_asked_only_when_a_language_is_given() -> None:
    def not_ready() -> list[str]:
        raise AssertionError("asked for the languages")

    assert parse_transcription_form(MULTIPART, MultiDict(), True, not_ready).language == ""
