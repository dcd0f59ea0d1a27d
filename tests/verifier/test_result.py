from __future__ import annotations

from verifier import ProviderError, ProviderUnavailable, VerificationResult
from verifier.smtp import Reply


def test_json_round_trip_with_enhanced_code():
    r = VerificationResult(
        address="nobody@example.test", normalized="nobody@example.test", status="invalid",
        reason="user_unknown", detail="x", tier="smtp", mx=("mx.example.test",), smtp_code=550,
        smtp_message="5.1.1 <nobody@example.test>: Recipient address rejected: User unknown",
        smtp_enhanced="5.1.1", smtp_host="mx.example.test[127.0.0.2]",
    )
    data = r.to_json()
    assert data["smtp"] == {"code": 550, "enhanced": "5.1.1", "message": r.smtp_message,
                            "host": "mx.example.test[127.0.0.2]"}
    assert VerificationResult.from_json(data) == r
    old = dict(data, smtp={"code": 250, "message": "2.1.5 Ok", "host": "h"})  # before the field
    assert VerificationResult.from_json(old).smtp_enhanced is None


def test_reply_enhanced():
    assert Reply(550, "5.1.1 <x@y>: Recipient address rejected: User unknown").enhanced == "5.1.1"
    assert Reply(250, "Ok").enhanced is None


def test_provider_unavailable_carries_unanswered():
    assert ProviderUnavailable("down").unanswered == ()
    exc = ProviderUnavailable("down", unanswered=["a@x", "b@x", "a@x"])
    assert exc.unanswered == ("a@x", "b@x") and str(exc) == "down"
    assert isinstance(exc, ProviderError)
