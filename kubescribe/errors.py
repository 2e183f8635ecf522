"""The one base error every part raises for a user-facing failure.

The CLI maps it to one line on stderr and ``exit_code``; the HTTP layer and the operator map
their own subclasses to an HTTP error or a SpeechModel condition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is a dependency of every part, but not of this module
    from pydantic import ValidationError


class KubescribeError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""

    exit_code: int = 1


def validation_problems(exc: ValidationError) -> str:
    """Every problem of a pydantic validation error on one line: ``a.b: message; c: message``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
