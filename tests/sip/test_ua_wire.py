"""The SIP user agent over real TLS on loopback, on messages that are legal but unusual, or
malformed in ways a parser meets (RFC 3261 §7.3.1, §9.2, §20.16): a Via header carrying
several values in one field, digits that are not ASCII."""

from __future__ import annotations

from .test_ua import SDP, Client, ca, request, start_ua

__all__ = ["ca"]  # the fixture, used by name


async def test_cancel_matches_an_invite_whose_via_values_share_one_field(ca) -> None:
    """§7.3.1: ``Via: a, b`` is ``Via: a`` then ``Via: b``; the INVITE's transaction is the
    top value's branch (§17.2.3), which the CANCEL carries (§9.1)."""
    ua, handler, _ = await start_ua(ca)
    c = await Client.open(ua, ca)
    try:
        invite = request("INVITE", branch="z9hG4bKtop", body=SDP)
        invite.set(
            "Via",
            "SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtop, "
            "SIP/2.0/TLS 10.0.0.1:5060;branch=z9hG4bKinner",
        )
        await c.send(invite.to_bytes())
        assert [(await c.recv()).status for _ in range(2)] == [100, 180]
        await c.send(request("CANCEL", branch="z9hG4bKtop").to_bytes())
        got = {(r.status, r.cseq[1]) for r in [await c.recv(), await c.recv()]}
        assert got == {(200, "CANCEL"), (487, "INVITE")}
        assert len(handler.cancels) == 1
    finally:
        await c.close()
        await ua.close()
