"""Exception types shared by the core.

``InputError`` is the user's problem (bad file, bad value, bad option): the CLI prints its message as one
line and exits with status 2. Its message must name the problem and the fix.
"""


class PsmaDoseError(Exception):
    """Base class of the errors raised deliberately by psmadose."""


class InputError(PsmaDoseError, ValueError):
    """Bad input or usage; the message says what is wrong and how to fix it."""


class CancelledError(PsmaDoseError):
    """A long job was cancelled by its caller through the progress callback."""
