"""INVITEs to the trunk listener from a source no trunk takes (a SIP scanner: they sweep every
public 5060): each answered 403, each source said once at WARNING, not a line per INVITE."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.api.keys import TRUNKS
from bridge.sip.digest import authorize

from ..support.waits import until

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\n"
)


def invite(port: int, n: int, user: str = "+15550001111") -> bytes:
    return (
        f"INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKscan{n};rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:100@127.0.0.1>;tag=s\r\nTo: <sip:+15550001111@127.0.0.1>\r\n"
        f"Call-ID: scan-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.1:9>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


STRANGERS = {"allowFrom": ["10.0.0.0/8"]}
"""A trunk that takes nobody on loopback: every INVITE here is a stranger's."""
DIGEST = {"allowFrom": ["127.0.0.1/32"], "username": "pbx", "password": "right"}
"""A trunk that takes loopback with a digest."""


@asynccontextmanager
async def listener(
    make_client: Any, tmp_path: Any, inbound: dict[str, Any]
) -> AsyncIterator[tuple[Any, int, socket.socket]]:
    """A bridge with a trunk listener and one trunk taking ``inbound``; the listener's port
    and a non-blocking UDP socket on loopback to send it INVITEs from."""
    client = await make_client(data_dir=str(tmp_path), sip_trunk_listen="127.0.0.1:0")
    trunk = {"name": "pbx", "uri": "sip:127.0.0.1:5999;transport=udp", "inbound": inbound}
    assert (await client.post("/trunks", json=trunk)).status == 201
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield client, client.app[TRUNKS].port, sock


async def test_a_scanner_is_said_once_per_source(make_client, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    refused: set[str] = set()
    async with listener(make_client, tmp_path, STRANGERS) as (_client, port, scanner):
        loop = asyncio.get_running_loop()
        for n in range(30):
            await loop.sock_sendto(scanner, invite(port, n), ("127.0.0.1", port))
        while len(refused) < 30:  # 100 Trying first, and the 403s retransmitted (no ACK)
            answer = await asyncio.wait_for(loop.sock_recv(scanner, 65536), 2)
            if answer.startswith(b"SIP/2.0 403"):
                refused.add(answer.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode())
    said = [r for r in caplog.records if "SIP INVITE from" in r.getMessage()]
    await until(lambda: len(said) >= 1, 1, "the first refusal said")
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text


async def test_wrong_credentials_are_said_once_per_source_and_their_end(
    make_client, tmp_path, caplog
) -> None:
    """A digest answered with a wrong password, again and again (someone guessing it): each
    refused 403, said once at WARNING (it was a line an INVITE), and said when that source's
    credentials are right again."""
    caplog.set_level(logging.INFO, logger="bridge")
    async with listener(make_client, tmp_path, DIGEST) as (_client, port, pbx):
        loop = asyncio.get_running_loop()

        async def final(request: bytes, call_id: str) -> bytes:
            await loop.sock_sendto(pbx, request, ("127.0.0.1", port))
            while True:  # past 100 Trying and earlier calls' retransmissions
                answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 2)
                if f"Call-ID: {call_id}\r\n".encode() in answer and answer[8:9] != b"1":
                    return answer

        for n, password in enumerate(["wrong"] * 10 + ["right"]):
            call_id = f"guess-{n}"
            # The right one calls no one (a number too short: refused once it is let in).
            user = "+15550001111" if password == "wrong" else "+1"
            uri = f"sip:{user}@127.0.0.1:{port}"
            challenged = await final(invite(port, n, user).replace(b"scan-", b"guess-"), call_id)
            assert challenged.startswith(b"SIP/2.0 407"), challenged
            challenges = [
                line.split(b": ", 1)[1].decode()
                for line in challenged.split(b"\r\n")
                if line.startswith(b"Proxy-Authenticate: ")
            ]
            answer = authorize(challenges, "INVITE", uri, "pbx", password)
            again = (
                invite(port, n, user)
                .replace(b"scan-", b"guess-")
                .replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
                .replace(b"branch=z9hG4bKscan", b"branch=z9hG4bKagain")
                .replace(b"Content-Type", f"Proxy-Authorization: {answer}\r\nContent-Type".encode())
            )
            answered = await final(again, call_id)
            if password == "wrong":
                assert answered.startswith(b"SIP/2.0 403"), answered
            else:
                assert not answered.startswith((b"SIP/2.0 403", b"SIP/2.0 407")), answered
    wrong = [r for r in caplog.records if "wrong digest credentials" in r.getMessage()]
    assert len(wrong) == 1 and wrong[0].levelno == logging.WARNING, caplog.text
    right = [r for r in caplog.records if "right again" in r.getMessage()]
    assert len(right) == 1 and "10 wrong" in right[0].getMessage(), caplog.text


async def test_a_digest_answer_with_a_nonce_not_ascii_is_challenged_again(
    make_client, tmp_path, caplog
) -> None:
    """A Proxy-Authorization whose nonce is not ASCII (a forged or garbled one) is a nonce we
    never issued: a fresh 407. Comparing it with ours raised TypeError, so the INVITE, past
    its 100 Trying, got no final response at all and stayed among the pending ones."""
    forged = (
        'Digest username="pbx", realm="127.0.0.1", nonce="1.2.\u00e9", '
        'uri="sip:x", response="00", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"'
    )
    async with listener(make_client, tmp_path, DIGEST) as (client, port, pbx):
        request = invite(port, 1).replace(
            b"Content-Type", f"Proxy-Authorization: {forged}\r\nContent-Type".encode()
        )
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(pbx, request, ("127.0.0.1", port))
        while True:
            answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 2)
            if not answer.startswith(b"SIP/2.0 100"):
                break
        assert answer.startswith(b"SIP/2.0 407"), answer
        assert not client.app[TRUNKS].ua.pending
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_strangers_refusal_is_not_sent_again(make_client, tmp_path, monkeypatch) -> None:
    """A refusal over UDP is sent again until its ACK (RFC 3261 §17.2.1), but not the 403
    to a source no trunk takes: its source address may be forged, and a refusal sent ten
    times over 32 s to whoever it names would make the listener a reflector. Once each."""
    from bridge.sip import transaction as sip_transaction

    monkeypatch.setattr(sip_transaction, "T1", 0.05)
    got: list[bytes] = []
    async with listener(make_client, tmp_path, STRANGERS) as (_client, port, scanner):
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(scanner, invite(port, 1), ("127.0.0.1", port))
        try:
            while True:  # T1 is 50 ms: Timer G would have sent it again within 0.6 s
                got.append(await asyncio.wait_for(loop.sock_recv(scanner, 65536), 0.6))
        except TimeoutError:
            pass
    assert [g.split(b"\r\n", 1)[0] for g in got] == [
        b"SIP/2.0 100 Trying",
        b"SIP/2.0 403 Forbidden (not a trunk's source)",
    ]
