"""Project exceptions. Each carries the message a user needs and the exit code from DESIGN.md."""
from __future__ import annotations


class EdgekdError(Exception):
    """Base class: `exit_code` is what the CLI exits with, the message is all the user sees."""

    exit_code = 2


class ConfigError(EdgekdError):
    """The config file or an override is wrong; the message lists every problem at once."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}:\n{lines}")


class DataError(EdgekdError):
    """Input data is missing or malformed (NaN, wrong rank, labels out of range, empty class)."""


class UsageError(EdgekdError):
    """A command-line argument is wrong."""


class CheckFailed(EdgekdError):
    """A check the user asked for did not pass (parity, budget)."""

    exit_code = 1


class MissingDependency(EdgekdError):
    """The environment lacks something (a runtime, a device); the message says how to get it."""

    exit_code = 3
