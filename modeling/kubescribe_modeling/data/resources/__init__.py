"""Text resources shipped with the data toolkit (word lists, sentences, grammar)."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

__all__ = ["digests", "load_lines", "load_sections"]


def digests() -> dict[str, str]:
    """sha256 of every text resource: a corpus records them, so it can be traced to its text."""
    root = resources.files(__name__)
    return {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
        for entry in sorted(root.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".txt")
    }


def _read_text(name: str) -> str:
    """The one place a resource's text is read (tests watch it: tuning never reads test text)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def load_lines(name: str) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a resource file, stripped, in file order."""
    text = _read_text(name)
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


@cache
def load_sections(name: str) -> dict[str, tuple[str, ...]]:
    """A resource file of ``[section]`` headers, each followed by its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in load_lines(name):
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is None:
            raise ValueError(f"{name}: line before the first [section]: {line!r}")
        else:
            current.append(line)
    return {key: tuple(value) for key, value in sections.items()}
