"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class PosbenchError(Exception):
    """Bad input or a state the user can fix (missing file, bad flag value, corrupt run)."""


class LengthError(PosbenchError):
    """A model was asked for more positions than its method supports (e.g. `learned` past its table)."""
