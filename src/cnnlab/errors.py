"""The one exception type cnnlab raises for bad input.

A subclass of ValueError so plain ``except ValueError`` still works in notebooks; the
command line turns it into a one-line message and exit code 2 (no traceback).
"""


class CnnlabError(ValueError):
    """Bad input: the message names the value received and says the fix."""
