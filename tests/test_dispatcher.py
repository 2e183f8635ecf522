"""The `kubescribe` dispatcher: lazy parts, one-line errors, and the process environment it sets."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest

from kubescribe import cli

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture
def seen_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Replace subcommand resolution (the import of a part) with a probe of the environment."""
    seen: dict[str, str | None] = {}

    def resolve(command: str) -> Callable[[Sequence[str]], int]:
        seen[command] = os.environ.get("OPENBLAS_NUM_THREADS")
        return lambda argv: 0

    monkeypatch.setattr(cli, "_resolve", resolve)
    for variable in BLAS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return seen


@pytest.mark.parametrize("command", ["serve", "transcribe"])
def test_runtime_commands_pin_numpy_blas_to_one_thread_before_importing(
    command: str, seen_env: dict[str, str | None]
) -> None:
    assert cli.main([command]) == 0
    assert seen_env[command] == "1"
    assert all(os.environ[variable] == "1" for variable in BLAS_VARIABLES)


def test_a_users_blas_setting_wins(
    seen_env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert cli.main(["serve"]) == 0
    assert seen_env["serve"] == "4"


@pytest.mark.parametrize("command", ["render", "train", "fetch"])
def test_other_commands_leave_blas_alone(command: str, seen_env: dict[str, str | None]) -> None:
    assert cli.main([command]) == 0
    assert seen_env[command] is None


def test_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


def test_python_dash_m_kubescribe_is_the_same_command() -> None:
    # `python -m kubescribe` runs where the console script is not installed (e.g. a GPU host
    # that only has the source tree on PYTHONPATH).
    import subprocess
    import sys

    from kubescribe import __version__

    done = subprocess.run(
        [sys.executable, "-m", "kubescribe", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == __version__
    unknown = subprocess.run(
        [sys.executable, "-m", "kubescribe", "no-such-command"], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
