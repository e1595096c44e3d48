"""Errors that cross the inference boundary, so the pipeline can tell them apart."""

from __future__ import annotations


class NotAnalysable(Exception):
    """The input is not something the model can read (a lateral film, an MR, 3 slices).

    Stored as "not analysed: <reason>"; never a crash and never a retry.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PackError(Exception):
    """A model pack is missing, corrupt or altered; only that pack is disabled."""

    def __init__(self, pack: str, message: str) -> None:
        super().__init__(f"model pack '{pack}': {message}")
        self.pack = pack
        self.message = message


class InferenceError(Exception):
    """Anything else that failed while analysing; stored as status "failed"."""
