"""Errors a user can act on: each names the file, key or value at fault and the fix."""


class MedsaganError(Exception):
    """Base class; the command line prints these as one line, without a traceback."""


class ConfigError(MedsaganError, ValueError):
    """A configuration key or value is wrong."""


class DataError(MedsaganError, ValueError):
    """A dataset, split or image file is missing, unreadable or inconsistent."""


class RunError(MedsaganError, ValueError):
    """A run directory or checkpoint is missing or does not match what was asked."""
