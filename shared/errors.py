"""The two kinds of failure a user is told about, as one sentence each.

Everything else is a bug: it is logged with its traceback on the server and the user gets
a short apology instead of a stack trace (see `shared.serving.ui.user_errors` and `shared.serving.cli`).
"""


class UserError(ValueError):
    """Bad input or settings: the message says what was wrong, the limit, and what to do."""


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here (offline, not cached, missing files)."""


def shown(value, limit: int = 60) -> str:
    """`value` quoted for a message, cut to `limit` characters: a sentence never echoes a
    megabyte of what a client sent."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} characters)"
