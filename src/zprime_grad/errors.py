"""Errors a user can act on. The CLI prints them in one line, without a traceback."""


class UserError(Exception):
    """Bad input (file, branch, config field, argument): the message says which and what to do."""
