"""Exceptions shared across pgolf's layers."""


class InputError(Exception):
    """Unreadable or unusable input: reported as one line, exit code 2."""
