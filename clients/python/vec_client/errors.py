""" Contains shared errors types that can be raised from API functions """
from typing import Any, TypeVar

from .types import Response

T = TypeVar("T")


class UnexpectedStatus(Exception):
    """Raised by api functions when the response status an undocumented status and Client.raise_on_unexpected_status is True"""

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

        super().__init__(
            f"Unexpected status code: {status_code}\n\nResponse content:\n{content.decode(errors='ignore')}"
        )


class ProblemError(Exception):
    """The server refused: a 4xx/5xx answer. `problem` is its typed body (models.Problem,
    RFC 9457 problem details) when it has one, else None; `content` the raw body."""

    def __init__(self, status_code: int, problem: Any, content: bytes):
        self.status_code = status_code
        self.problem = problem
        self.content = content
        title = getattr(problem, "title", "") or "error"
        detail = getattr(problem, "detail", "") or content.decode(errors="ignore")[:300]
        super().__init__(f"{status_code} {title}: {detail}")


def unwrap(response: Response[T]) -> T:
    """The typed body of a 2xx answer (`sync_detailed` / `asyncio_detailed`); a 4xx or 5xx
    raises ProblemError carrying the typed problem."""
    from .models import Problem

    if int(response.status_code) >= 400:
        parsed = response.parsed if isinstance(response.parsed, Problem) else None
        raise ProblemError(int(response.status_code), parsed, response.content)
    return response.parsed  # type: ignore[return-value]


__all__ = ["ProblemError", "UnexpectedStatus", "unwrap"]
