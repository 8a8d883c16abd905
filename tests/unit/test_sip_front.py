"""The shared SIP listener's bookkeeping (``bridge/sip/front.py``): which number a
Request-URI names, and a number whose engine is rebuilt (its new line takes new calls, the old
one keeps its dialogs until it leaves). The calls themselves: ``tests/sip/test_sipp_numbers.py``."""

from __future__ import annotations

import asyncio

from bridge.sip.front import Doors, FrontDoor, Line, number_of


class Calls:
    def __init__(self, *keys: tuple[str, str]) -> None:
        self.keys = set(keys)
        self.byes: list[str] = []

    def owns(self, dialog_key: tuple[str, str]) -> bool:
        return dialog_key in self.keys

    async def bye(self, dialog, req) -> None:  # type: ignore[no-untyped-def]
        self.byes.append(dialog.key[0])


def test_the_request_uri_user_names_the_number() -> None:
    assert number_of("sip:+15550002222@sip.example;transport=tls") == "15550002222"
    assert number_of("sip:15550002222;tgrp=a;trunk-context=b@sip.example") == "15550002222"
    assert number_of("sip:sip.example") == ""
    assert number_of("sip:alice@sip.example") == ""
    assert number_of("not a uri") == ""


def test_a_rebuilt_number_takes_new_calls_and_its_old_line_keeps_its_dialogs() -> None:
    door = FrontDoor(Doors(), ("127.0.0.1", 5061))
    old, new = Calls(("call-1", "tag")), Calls()
    first, second = Line("15550002222", "a.example", old), Line("15550002222", "a.example", new)
    door.add(first)
    door.add(second)
    assert door.lines["15550002222"] is second
    assert door._owner(("call-1", "tag")) is old

    class Dialog:
        key = ("call-1", "tag")

    asyncio.run(door.bye(Dialog(), None))  # type: ignore[arg-type]
    assert old.byes == ["call-1"] and new.byes == []
    asyncio.run(door.leave(second))
    assert door.lines["15550002222"] is first
    asyncio.run(door.leave(first))
    assert not door.lines and not door.members


def test_a_number_without_its_password_yet_refuses_invites() -> None:
    """A run-time number on SIP before /sip/enable read Meta's password: 403, never an
    unchallenged call (the settings' own number keeps today's behaviour: not locked)."""
    door = FrontDoor(Doors(), ("127.0.0.1", 5061))
    taken: list[str] = []

    class Taker(Calls):
        async def invite(self, tx) -> None:  # type: ignore[no-untyped-def]
            taken.append(tx.req.uri)

    door.add(Line("15550003333", "b.example", Taker(), locked=True))
    door.add(Line("15550004444", "c.example", Taker()))

    class Tx:
        def __init__(self, uri: str) -> None:
            self.req = type("Req", (), {"uri": uri})()
            self.answers: list[int] = []

        async def respond(self, status: int, reason: str) -> None:
            self.answers.append(status)

    locked, open_ = Tx("sip:+15550003333@b.example"), Tx("sip:+15550004444@c.example")
    asyncio.run(door.invite(locked))  # type: ignore[arg-type]
    asyncio.run(door.invite(open_))  # type: ignore[arg-type]
    assert locked.answers == [403] and taken == ["sip:+15550004444@c.example"]
