"""`RunError`: a run that cannot start or continue (no torch)."""


class RunError(Exception):
    """A run that cannot start or continue; the message is one sentence."""
