"""Refusals a customer or operator can meet. Each carries a message fit to print."""


class DomainError(Exception):
    """A command was refused; nothing was appended."""


class AccountNotFound(DomainError):
    pass


class AccountAlreadyOpen(DomainError):
    pass


class InsufficientCredits(DomainError):
    pass


class InvalidCommand(DomainError):
    pass


class TaskNotFound(DomainError):
    pass


class TaskNotCancellable(DomainError):
    pass


class TaskAlreadyCancelled(DomainError):
    pass


class TaskNotFinished(DomainError):
    pass


class TaskAlreadyFinished(DomainError):
    pass


class ResultsDeleted(DomainError):
    """The task's per-address data is gone (its retention ran out, or it was erased): its counts
    and money stay, its results and unprocessed addresses cannot be had any more."""


class BadUpload(DomainError):
    """A file that cannot become a task (empty, binary, not UTF-8, too big, a duplicate)."""


class DuplicateUpload(BadUpload):
    """The same file was uploaded within the duplicate window (pass allow_duplicate)."""


class InvariantViolation(Exception):
    """A rule that must always hold did not: the log or the code is broken. Never a refusal
    of a command: it means stop and investigate. Raised by explicit checks (not `assert`,
    which `python -O` strips)."""


def check(condition: bool, message: str, *values: object) -> None:
    """TigerBeetle-style invariant: cheap, always on, loud. The message's `{}` take `values`
    only when it fails: checks run per address and per event, an f-string would be built
    every time."""
    if not condition:
        raise InvariantViolation(message.format(*values) if values else message)
