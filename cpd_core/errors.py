"""One exception type for bad user input, so the CLI and the app can show a message instead of a traceback.

Stage: shared by every stage.
"""


class CPDInputError(ValueError):
    """Raised for input the user can fix; the message names the problem and the fix."""
