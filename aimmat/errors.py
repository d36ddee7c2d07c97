"""One exception tree. Every error carries the exit code the CLI returns.

Messages name what failed, where (manifest key and line, or candidate and
stage folder) and how to fix it.
"""

from __future__ import annotations


class AimmatError(Exception):
    """Base of every error aimmat reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n  fix: {self.fix}"
        return self.message


class UsageError(AimmatError):
    """Wrong command-line arguments."""

    exit_code = 2


class ManifestError(AimmatError):
    """The manifest (or a file it names) is invalid. Nothing was written."""

    exit_code = 3


class RenderError(AimmatError):
    """A template could not be rendered from its scope (names template, line, variable)."""

    exit_code = 3


class CampaignError(AimmatError):
    """The campaign folder is inconsistent or held by another apply."""

    exit_code = 4


class CampaignLocked(CampaignError):
    """Another ``aimmat apply`` holds the campaign lock."""


class EnvironmentProblem(AimmatError):
    """A required program or data file is missing from this machine."""

    exit_code = 5


EXIT_OK = 0
EXIT_FAILED_STAGES = 1
EXIT_CHANGES_PENDING = 10
