"""Contract 4: the documented flag/variable table and the code agree; precedence; errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubescribe_runtime.config import (
    DEMO_MODEL_DIR,
    ConfigError,
    FetchConfig,
    ServeConfig,
    build_parser,
    resolve,
    settings_table,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "runtime-config.md"


def _doc_rows() -> set[tuple[str, str]]:
    rows = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([^`]+)`(?: \(argument\))? \| `(KUBESCRIBE_[A-Z0-9_]+)` \|", line)
        if match:
            rows.add((match.group(1), match.group(2)))
    return rows


def test_documented_table_equals_the_code() -> None:
    documented = _doc_rows()
    implemented = {
        (flag, env)
        for model in (ServeConfig, FetchConfig)
        for _, flag, env in settings_table(model)
    }
    assert len(documented) >= 20
    assert documented == implemented


def test_every_variable_has_a_working_flag() -> None:
    parser = build_parser(ServeConfig, "serve", "")
    for name, flag, _ in settings_table(ServeConfig):
        assert flag in parser._option_string_actions, flag
        assert parser._option_string_actions[flag].dest == name


def _serve(argv: list[str], env: dict[str, str]) -> ServeConfig:
    parser = build_parser(ServeConfig, "serve", "")
    return resolve(ServeConfig, vars(parser.parse_args(argv)), env)


def test_flag_over_variable_over_default() -> None:
    assert _serve([], {}).max_batch_size == 16
    assert _serve([], {"KUBESCRIBE_MAX_BATCH_SIZE": "4"}).max_batch_size == 4
    assert _serve(["--max-batch-size", "2"], {"KUBESCRIBE_MAX_BATCH_SIZE": "4"}).max_batch_size == 2


def test_defaults_serve_the_bundled_demo_model_on_loopback() -> None:
    config = _serve([], {})
    assert config.model_dir == DEMO_MODEL_DIR
    assert DEMO_MODEL_DIR.parts[-3:] == ("examples", "models", "demo")
    assert (config.host, config.port, config.device) == ("127.0.0.1", 8080, "cpu")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False)])
def test_boolean_variable(value: str, expected: bool) -> None:
    config = _serve([], {"KUBESCRIBE_ALLOW_CPU_FALLBACK": value})
    assert config.allow_cpu_fallback is expected
    assert _serve(["--allow-cpu-fallback"], {}).allow_cpu_fallback is True


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--device", "tpu"], {}, "--device / KUBESCRIBE_DEVICE"),
        ([], {"KUBESCRIBE_PORT": "eighty"}, "--port / KUBESCRIBE_PORT"),
        ([], {"KUBESCRIBE_MAX_BATCH_SIZE": "0"}, "--max-batch-size / KUBESCRIBE_MAX_BATCH_SIZE"),
        (["--window-seconds", "4", "--window-overlap-seconds", "2"], {}, "window overlap"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        _serve(argv, env)


def test_fetch_positional_arguments_fall_back_to_variables() -> None:
    parser = build_parser(FetchConfig, "fetch", "")
    config = resolve(
        FetchConfig,
        vars(parser.parse_args([])),
        {"KUBESCRIBE_MODEL_URI": "s3://b/p", "KUBESCRIBE_MODEL_DIR": "/models"},
    )
    assert (config.uri, config.dest) == ("s3://b/p", Path("/models"))
    with pytest.raises(ConfigError, match="URI / KUBESCRIBE_MODEL_URI"):
        resolve(FetchConfig, vars(parser.parse_args([])), {})
    with pytest.raises(ConfigError, match="--sha256"):
        resolve(FetchConfig, vars(parser.parse_args(["a", "b", "--sha256", "xyz"])), {})
