"""What a long-running bridge keeps per call, per dialog, per connection or per number is let
go when that thing ends, however it ends: many ended set-ups leave each structure as it was."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.engines.cloudapi.sip_dialogs import SipDialogs
from bridge.sip import parse

ROUNDS = 1000


class _Permissions:
    def heard_from(self, phone: str, called: bool = False) -> None:
        pass


class _GraphSide:
    permissions = _Permissions()


class _Leg:
    """A media leg whose answer fails (Meta's offer cannot be answered) or waits."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.wacid = ""
        self.closed = False

    async def answer(self, offer: str, codecs: tuple[str, ...]) -> str:
        if self.fails:
            raise ValueError("no codec in common")
        return "v=0\r\n"

    def expect_close(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class _Dialog:
    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key


class _Tx:
    """Meta's INVITE as the user agent hands it over."""

    def __init__(self, n: int) -> None:
        self.req = parse(
            (
                f"INVITE sip:+15550001111@bridge.example SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS meta.example;branch=z9hG4bK{n}\r\n"
                f"From: <sip:+15550002222@wa.meta.vc>;tag=f{n}\r\n"
                f"To: <sip:+15550001111@bridge.example>\r\n"
                f"Call-ID: call-{n}\r\n"
                f"CSeq: 1 INVITE\r\n"
                f"x-wa-meta-wacid: wacid-{n}\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
        )
        self.dialog = _Dialog((f"call-{n}", f"ours-{n}"))
        self.final = 0
        self.answers: list[int] = []

    async def respond(self, status: int, reason: str, **_: Any) -> bool:
        self.answers.append(status)
        if status >= 200:
            self.final = status
        return True


def test_meta_invites_that_never_become_dialogs_leave_no_calls_behind() -> None:
    """An INVITE is findable by its dialog's key while its leg answers (a CANCEL may come):
    each that ends unconfirmed — its offer refused (488), cancelled while it rang, declined
    — is forgotten under that key too, not only under the confirmed dialog's."""

    async def run() -> None:
        events: asyncio.Queue[Any] = asyncio.Queue(maxsize=ROUNDS * 4)
        legs: list[_Leg] = []

        def new_leg(label: str) -> Any:
            legs.append(_Leg(fails=len(legs) % 2 == 0))
            return legs[-1]

        dialogs = SipDialogs(events, _GraphSide(), new_leg)  # type: ignore[arg-type]
        for n in range(ROUNDS):
            tx = _Tx(n)
            await dialogs.invite(tx)  # type: ignore[arg-type]
            if n % 2 == 0:
                assert tx.answers == [488]  # the offer refused
            else:
                assert tx.answers == [180]  # it rings; Meta cancels it
                await dialogs.cancelled(tx)  # type: ignore[arg-type]
        assert all(leg.closed for leg in legs)
        assert dialogs.calls == {}
        assert dialogs.by_dialog == {}

    asyncio.run(run())
