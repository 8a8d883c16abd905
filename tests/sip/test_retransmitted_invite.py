"""An INVITE sent again over TLS after its final response (the same branch, Call-ID and CSeq;
Meta resending it on a new connection): absorbed by its server transaction (RFC 3261 §17.2.1)
— answered with the dialog's 2xx again (§13.3.1.4) or the same refusal — never a second call.
Answered transactions are kept for 64·T1, at most ``COMPLETED`` of them."""

from __future__ import annotations

from bridge.sip import Address, Response, reply
from bridge.sip import completed as sip_completed
from bridge.sip.completed import Completed
from bridge.sip.headers import new_branch

from .test_ua import SDP, Client, Handler, ca, request, start_ua

__all__ = ["ca"]  # the fixture, used by name


class Busy(Handler):
    """Rings, then refuses: ``486 Busy Here``."""

    async def invite(self, tx) -> None:
        self.invites.append(tx)
        await tx.respond(180, "Ringing")
        await tx.respond(486, "Busy Here")


async def statuses_until_final(c: Client) -> list[Response]:
    got = [await c.recv()]
    while got[-1].status < 200:
        got.append(await c.recv())
    return got


async def test_an_invite_sent_again_after_its_200_gets_the_200_again_not_a_new_call(ca) -> None:
    """The 200 and its ACK on one connection; the same INVITE on a new connection, and once
    more on the first: the dialog's 200 each time (its tag, its answer), one call. It was a
    second call, rung and answered in a new dialog."""
    ua, handler, _ = await start_ua(ca, answer=True)
    first = await Client.open(ua, ca)
    again = await Client.open(ua, ca)
    try:
        invite = request("INVITE", branch=new_branch(), call_id=new_branch(), body=SDP)
        await first.send(invite.to_bytes())
        got = await statuses_until_final(first)
        assert [r.status for r in got] == [100, 180, 200]
        ok = got[-1]
        tag = Address.parse(ok.get("To")).tag
        await first.send(
            request("ACK", branch=new_branch(), call_id=invite.call_id, to_tag=tag).to_bytes()
        )
        for conn in (again, first):
            await conn.send(invite.to_bytes())
            resent = await conn.recv()
            assert (resent.status, resent.cseq) == (200, (1, "INVITE"))
            assert resent.call_id == invite.call_id
            assert Address.parse(resent.get("To")).tag == tag and resent.body == ok.body
        assert len(handler.invites) == 1 and len(handler.acks) == 1
    finally:
        await first.close()
        await again.close()
        await ua.close()


async def test_an_invite_sent_again_after_its_refusal_gets_the_same_refusal(ca) -> None:
    """A 486 and its ACK; the same INVITE on a new connection: the same 486 (its tag), not a
    second call rung. A new INVITE of the same call (a new branch) is a new transaction."""
    ua, handler, _ = await start_ua(ca)
    handler = ua.handler = Busy()
    first = await Client.open(ua, ca)
    again = await Client.open(ua, ca)
    try:
        invite = request("INVITE", branch=new_branch(), call_id=new_branch(), body=SDP)
        await first.send(invite.to_bytes())
        busy = (await statuses_until_final(first))[-1]
        assert busy.status == 486
        await again.send(invite.to_bytes())
        resent = await again.recv()
        assert (resent.status, resent.get("To")) == (486, busy.get("To"))
        assert len(handler.invites) == 1
        retry = request("INVITE", branch=new_branch(), call_id=invite.call_id, cseq=2, body=SDP)
        await again.send(retry.to_bytes())
        assert [r.status for r in await statuses_until_final(again)] == [100, 180, 486]
        assert len(handler.invites) == 2
    finally:
        await first.close()
        await again.close()
        await ua.close()


def test_answered_transactions_are_kept_for_64_t1_and_at_most_completed(monkeypatch) -> None:
    """Each final response is kept for ``keep`` seconds (64·T1), then forgotten; past
    ``COMPLETED`` at once the oldest goes first, whatever its time."""
    monkeypatch.setattr(sip_completed, "COMPLETED", 3)
    now = [100.0]
    kept = Completed(keep=32.0, clock=lambda: now[0])

    def final(n: int) -> Response:
        req = request("INVITE", branch=f"z9hG4bKkept{n}", call_id=f"kept-{n}")
        return reply(req, 486, "Busy Here", to_tag=f"t{n}")

    for n in range(3):
        kept.remember(final(n))
        now[0] += 10.0
    assert kept.get("kept-0", "z9hG4bKkept0", (1, "INVITE")) is not None  # 30 s old
    assert kept.get("kept-0", "z9hG4bKkept0", (2, "INVITE")) is None  # another CSeq
    now[0] += 2.5  # 32.5 s: the first one's time is out
    assert kept.get("kept-0", "z9hG4bKkept0", (1, "INVITE")) is None
    assert len(kept) == 2
    for n in range(3, 5):  # 4 at once: the oldest goes, in time or not
        kept.remember(final(n))
    assert len(kept) == 3
    assert kept.get("kept-1", "z9hG4bKkept1", (1, "INVITE")) is None
    assert kept.get("kept-4", "z9hG4bKkept4", (1, "INVITE")).status == 486
