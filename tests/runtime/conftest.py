"""Fixtures shared by the runtime tests: the tone model (a tiny artifact whose transcripts are
exact); servers come from :func:`rt_server.running`."""

from __future__ import annotations

from pathlib import Path

import pytest
from rt_fixtures import TONE_TOKENS, write_artifact


@pytest.fixture(scope="session")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
