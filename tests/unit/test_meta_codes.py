"""Meta's calling error codes → end reasons, API errors and documented hints (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.calls.model import EndReason
from bridge.engines.cloudapi.codes import (
    META_CODES,
    code_in_text,
    first_known,
    terminate_reason,
)
from bridge.engines.cloudapi.sip_calls import bic_failure
from bridge.sip.message import Response

DOCS = Path(__file__).resolve().parents[2] / "docs"
END_REASONS = sorted({c.reason for c in META_CODES.values()})
"""The end reasons Meta's codes can give a call (also members of ``EndReason``)."""

SPEC_CODES = {
    138006: "no_call_permission",
    138009: "permission_request_limit",
    138012: "call_limit_reached",
    138002: "number_at_capacity",
    138007: "setup_failed",
    138019: "setup_failed",
    138020: "relay_failed",
    138021: "media_timeout",
    138022: "media_timeout",
    138023: "no_media",
    131055: "wrong_signalling",
    138014: "calling_paused",
    138015: "messaging_limit_too_low",
    613: "meta_rate_limit",
}
"""Every code of the "Timers and errors" table of Meta's calling troubleshooting page, with
the penalty and limit codes of its business-initiated calling pages (138014 paused after a
quality penalty, 138015 messaging limit below 2 000) and Graph's rate limit (613)."""


def test_every_code_of_the_spec_is_mapped_to_a_call_end_reason() -> None:
    assert {c: m.reason for c, m in META_CODES.items()} == SPEC_CODES
    assert set(END_REASONS) <= {str(r) for r in EndReason}


@pytest.mark.parametrize("code", sorted(SPEC_CODES))
def test_a_failed_terminate_ends_with_metas_reason_and_detail(code: int) -> None:
    errors = [{"code": code, "message": "Something Meta says", "error_data": {"details": "x"}}]
    for answered in (False, True):
        reason, detail = terminate_reason("FAILED", errors, answered=answered, outbound=True)
        assert reason == SPEC_CODES[code]
        assert detail == f"{code}: Something Meta says (x)"


def test_terminate_without_a_known_code() -> None:
    unknown = [{"code": 131000, "message": "Something went wrong"}]
    assert terminate_reason("FAILED", unknown, answered=True, outbound=True) == (
        "failed",
        "131000: Something went wrong",
    )
    assert terminate_reason("FAILED", [], answered=False, outbound=False) == ("failed", "")
    assert terminate_reason("REJECTED", [], answered=False, outbound=True)[0] == "rejected"
    assert terminate_reason("COMPLETED", [], answered=True, outbound=True)[0] == "remote_hangup"
    assert terminate_reason("COMPLETED", [], answered=False, outbound=True)[0] == "no_answer"
    assert terminate_reason("COMPLETED", [], answered=False, outbound=False)[0] == ""
    # The first known code wins; codes as strings are read too (Meta's JSON has both).
    mixed = [{"code": 1, "message": "a"}, {"code": "138020", "message": "relay"}]
    known, detail = first_known(mixed)
    assert known is not None and known.reason == "relay_failed" and detail == "138020: relay"
    assert first_known([{"code": True}])[0] is None


def test_sip_reason_header_carries_metas_code() -> None:
    assert code_in_text('Q.850;cause=41;text="138021 media receive timeout"').reason == (
        "media_timeout"
    )
    assert code_in_text("SIP;cause=480") is None
    resp = Response(status=480, reason="Temporarily Unavailable")
    assert bic_failure(resp, "sip.example.com", "15550009999")[0] == "no_answer"
    resp.headers.append(("Reason", 'SIP;cause=480;text="138012 call limit reached"'))
    reason, why = bic_failure(resp, "sip.example.com", "15550009999")
    assert reason == "call_limit_reached" and "138012" in why and "retryAt" in why
    # A final 407: the UAC's own account of the digest round, never a guess at the password.
    refused = Response(status=407, reason="Proxy Authentication Required")
    why = "Meta's 407 carries 1 challenge(s) and we can answer none: …"
    assert bic_failure(refused, "sip.example.com", "15550009999", why) == ("failed", why)


def test_docs_give_a_hint_for_every_code() -> None:
    text = (DOCS / "engines" / "cloudapi.md").read_text()
    for code, meta in META_CODES.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| {code} ")), "")
        assert row, f"docs/engines/cloudapi.md has no row for {code}"
        assert f"`{meta.reason}`" in row and meta.hint.split(":")[0][:30] in row, row
    api = (DOCS / "api.md").read_text()
    for reason in END_REASONS:
        assert f"`{reason}`" in api, reason


def test_a_code_is_read_as_a_whole_number_however_meta_spells_it() -> None:
    from bridge.engines.cloudapi.webhook import whole_number

    spelled = [138006, 138006.0, "138006", " 138006 "]
    assert [whole_number(v) for v in spelled] == [138006] * 4
    for odd in (True, 138006.5, float("nan"), float("inf"), "13800x", None, [138006]):
        assert whole_number(odd) is None, odd
