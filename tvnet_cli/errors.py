"""The one error type of our own: an expected failure the CLI prints as one line."""


class TVNetError(Exception):
    """Expected failure (bad input, missing file, ...). Message names the file and the problem."""
