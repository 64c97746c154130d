"""One exception type for bad user input, so the CLI and the app can show a message instead of a traceback.

Stage: shared by every stage.
"""


class CPDInputError(ValueError):
    """Raised for input the user can fix; the message names the problem and the fix."""


MAX_LISTED = 10  # items named in a message; the rest are counted


def listed(items: list[str]) -> str:
    """The first MAX_LISTED items, then how many more (for messages that name structures)."""
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
