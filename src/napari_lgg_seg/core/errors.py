"""Exceptions whose message is meant for the user, as is."""

from __future__ import annotations


class LGGSegError(Exception):
    """Base class: the message says what was wrong and with which file."""


class InputError(LGGSegError, ValueError):
    """An input file, folder or array cannot be used."""


class ModelError(LGGSegError):
    """A model file cannot be loaded or does not fit the task."""


class Cancelled(LGGSegError):
    """The user cancelled a long-running operation."""
