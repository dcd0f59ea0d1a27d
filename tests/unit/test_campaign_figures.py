"""The figures the fault campaigns report, read from real log shapes (scripts/campaign_lib.py)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import campaign_lib as C

POSTFIX = """\
Dec 07 10:20:28 mx postfix/smtpd[18626]: CDAFE20C798: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 \
<nobody-t1-1@example.test>: Recipient address rejected: User unknown; from=<probe@vec.test> \
to=<nobody-t1-1@example.test> proto=ESMTP helo=<vec.test>
Dec 07 10:21:10 mx postfix/smtpd[18627]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.2.0 \
<grey-t1-1-a@greylist.test>: Recipient address rejected: Greylisted; from=<probe@vec.test> \
to=<grey-t1-1-a@greylist.test> proto=ESMTP helo=<vec.test>
Dec 07 10:21:13 mx postfix/smtpd[18627]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 \
<grey-t1-1-a@greylist.test>: Recipient address rejected: User unknown; from=<probe@vec.test> \
to=<grey-t1-1-a@greylist.test> proto=ESMTP helo=<vec.test>
Dec 07 10:21:19 mx postfix/smtpd[18628]: 4E5E920C963: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 \
<nobody-t1-1@example.test>: Recipient address rejected: User unknown; from=<probe@vec.test> \
to=<nobody-t1-1@example.test> proto=ESMTP helo=<vec.test>
Dec 07 10:21:20 mx postfix/smtpd[18628]: 4E5E920C964: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 \
<nobody-other-1@example.test>: Recipient address rejected: User unknown; from=<probe@vec.test> \
to=<nobody-other-1@example.test> proto=ESMTP helo=<vec.test>
"""


def test_final_answers_count_per_recipient_and_greylisting_is_a_retry_not_a_duplicate(tmp_path):
    log = tmp_path / "postfix.log"
    log.write_text(POSTFIX)
    answered = C.postfix_final_rcpts(log, "t1")
    assert answered == {"nobody-t1-1@example.test": 2, "grey-t1-1-a@greylist.test": 1}  # another tag: not ours
    assert C.duplicates(answered) == 1


def settled(position: int, task: str, address: str, late: bool = False) -> dict:
    return {"position": position, "stream": f"task-{task}", "type": "AddressVerified",
            "data": {"address": address, "late": late}}


def test_an_address_settled_twice_in_one_task_is_charged_twice_and_a_late_result_is_free():
    events = [settled(1, "a", "x@example.test"), settled(2, "a", "x@example.test", late=True),
              settled(3, "b", "x@example.test"), settled(4, "b", "y@example.test"),
              settled(5, "b", "y@example.test"),
              {"position": 6, "stream": "account-acme", "type": "CreditsDebited", "data": {"task_id": "b"}},
              {"position": 7, "stream": "account-acme", "type": "CreditsDebited", "data": {"task_id": "b"}}]
    assert C.money_figures(events) == {"events": 7, "addresses_charged_twice": 1, "tasks_debited_twice": 1,
                                       "system_failures": 0}


def test_a_failing_events_read_stops_the_campaign_instead_of_reading_as_a_clean_log(tmp_path):
    import pytest

    from tests.e2e.cli import Vec

    (tmp_path / "vec.db").write_text("not a database")
    broken = Vec({"VEC_STORE": f"sqlite:///{tmp_path}/vec.db"}, tmp_path)
    with pytest.raises(C.CommandFailed, match="vec events failed"):
        C.read_events(broken)
