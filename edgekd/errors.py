"""Every exception edgekd raises for a user to read. One base class carries the exit code from the
exit-code contract; the CLI prints the message (no traceback without --debug) and exits with it.
Standard library only: it ships inside the benchmark agent's zipapp (edgekd.bench.agent.pyz).

    0 success; 1 a check failed; 2 bad input or usage; 3 the environment lacks something.
"""
from __future__ import annotations


def cut(text: str, limit: int = 160) -> str:
    """`text` for a message: a 100,000-character path or value is cut, with its length said."""
    return text if len(text) <= limit else f"{text[:limit - 60]}...{text[-40:]} ({len(text):,} characters)"


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
    """Input data or a file is missing or malformed (NaN, wrong rank, labels out of range, corrupt file)."""


class UsageError(EdgekdError):
    """A command-line argument is wrong."""


class ModelError(EdgekdError):
    """An architecture name or its options cannot build a model that fits the data."""


class ExportError(EdgekdError):
    """The model or an option cannot be exported (unconvertible op, unsupported option, bad file)."""


class CheckFailed(EdgekdError):
    """A check the user asked for did not pass (int8 accuracy, a budget)."""

    exit_code = 1


class ParityError(CheckFailed):
    """An exported file disagrees with the PyTorch model it came from beyond the tolerance."""


class MissingDependency(EdgekdError):
    """The environment lacks something (a runtime, a device, a converter); the message says how to get it."""

    exit_code = 3


class BudgetError(EdgekdError):
    """A budgets file or a report given to the gate is malformed; the message names the line and key."""


class AgentError(EdgekdError):
    """The benchmark agent could not measure (bad input 2, a failed or timed-out measurement 1, a runtime
    or device missing 3): each raise names its exit code, since the agent's workers pass theirs on."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
