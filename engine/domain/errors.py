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
