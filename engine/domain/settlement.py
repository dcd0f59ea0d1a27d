"""Settlement across the two consistency boundaries: the credits a task's events give back
to its account (money rules 3-7). Pure: the task decider says which events free how many
credits and why (`tasks.refunds_for`), the account decider turns each into a refund on the
account as it evolves, so a refund can never exceed what the task still has outstanding.

The service appends the task's events and these refunds in one transaction; the task
stream's expected version guards the decision (each address settles once), so the account
stream is written at any version and settling tasks never conflict on their account."""
from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from typing import Sequence

from engine.domain import accounts, tasks
from events import CreditsRefunded, Event


def refunds(task_id: str, decided: Sequence[Event], account: accounts.AccountState) -> list[tuple[Event, CreditsRefunded]]:
    """(cause, refund) for every credit the decided task events give back, in order.

    A cause's run of equal refunds (a batch's Unknowns, one credit each) is decided as one:
    n refunds of 1 pass one by one exactly when one of n passes (each is at most what is
    still outstanding), and each is still appended as its own refund of 1."""
    caused: list[tuple[Event, CreditsRefunded]] = []
    for (_, amount, reason), run in groupby(tasks.refunds_for(decided), key=lambda r: (id(r[0]), r[1], r[2])):
        causes = [cause for cause, _, _ in run]
        for refund in accounts.decide(accounts.RefundCredits(task_id, amount * len(causes), reason), account):
            account = accounts.evolve(account, refund)
            if isinstance(refund, CreditsRefunded):
                each = replace(refund, amount=amount)  # one frozen event, appended once per cause
                caused.extend((cause, each) for cause in causes)
    return caused
