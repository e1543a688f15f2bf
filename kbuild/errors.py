"""One exception hierarchy; each error carries the message a user reads and the
exit code the CLI returns. The library raises these and never prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class KbuildError(Exception):
    """Base of every error kbuild reports to a user."""

    exit_code = 1

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)

    def render(self) -> str:
        return "\n".join([self.message, *("  " + d for d in self.details)])


class UsageError(KbuildError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One mistake in a user's file, located as precisely as we can."""

    file: str
    line: int | None
    column: int | None
    path: str  # JSON path, e.g. $.steps[0].type
    message: str

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}"


class SpecError(KbuildError):
    """An invalid pipeline or spin file; carries every problem found in it."""

    exit_code = 3

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message, [p.render() for p in problems])
        self.problems = list(problems)


class SpinError(KbuildError):
    """An unknown spin, or a step the spin cannot run."""

    exit_code = 3


class ResolutionError(KbuildError):
    """Dependencies cannot be resolved, locked or fetched."""

    exit_code = 4


class BuildError(KbuildError):
    """The artifact could not be built."""

    exit_code = 5


class VerificationError(KbuildError):
    """The built artifact does not reproduce the expected sample outputs."""

    exit_code = 6
