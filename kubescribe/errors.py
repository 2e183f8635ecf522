"""The one base error every part raises for a user-facing failure.

The CLI maps it to one line on stderr and ``exit_code``; the HTTP layer and the operator map
their own subclasses to an HTTP error or a SpeechModel condition.
"""


class KubescribeError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""

    exit_code: int = 1
