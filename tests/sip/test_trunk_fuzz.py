"""Hostile SIP on the trunk listener (issue 48): thousands of mutated INVITEs, REFERs and
INFOs over UDP and TCP — the in-dialog ones aimed at a live phone leg's dialog (baresip in a
sim call), so they reach the INFO and REFER parsers — leave 0 errors logged, a listener that
still answers OPTIONS, and the call and its leg up."""

from __future__ import annotations

import asyncio
import random
import socket

from bridge.api.keys import MANAGER, TRUNKS
from bridge.sip import parse

from ..support.calls import wait_state
from ..support.waits import until
from .test_sip_participant import PHONE, add_phone, of


def templates(port: int, call_id: str, to_tag: str, from_tag: str) -> list[bytes]:
    via = "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKfuzz{n};rport\r\n"
    dialog = (
        f"From: <sip:1001@127.0.0.1>;tag={to_tag}\r\n"
        f"To: <sip:+{PHONE}@127.0.0.1>;tag={from_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
    )
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\n"
    )
    return [
        (
            f"INVITE sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n{via}Max-Forwards: 70\r\n"
            "From: <sip:pbx@127.0.0.1>;tag=f\r\nTo: <sip:+15550001111@127.0.0.1>\r\n"
            "Call-ID: fuzz-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@127.0.0.1:9>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode(),
        (
            f"REFER sip:bridge@127.0.0.1:{port} SIP/2.0\r\n{via}Max-Forwards: 70\r\n{dialog}"
            "CSeq: {n} REFER\r\nRefer-To: <sip:2002@127.0.0.1:9>\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        (
            f"INFO sip:bridge@127.0.0.1:{port} SIP/2.0\r\n{via}Max-Forwards: 70\r\n{dialog}"
            "CSeq: {n} INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
            "Signal=5\r\nDuration=160\r\n"
        ).encode(),
    ]


def mutate(rng: random.Random, data: bytes, n: int) -> bytes:
    out = bytearray(data.replace(b"{n}", str(n).encode()))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5, 8])):  # some arrive whole, to the parsers
        at = rng.randrange(len(out))
        roll = rng.random()
        if roll < 0.5:
            out[at] = rng.randrange(256)
        elif roll < 0.7:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        elif roll < 0.85:
            del out[at : at + rng.randint(1, 20)]
        else:
            out[at:at] = rng.choice([b"\r\n", b";", b"<", b">", b":", b"\x00", b"%", b"\r\n\r\n"])
    return bytes(out)


async def test_mutated_invite_refer_info_leave_no_error_and_the_listener_answers(
    bridge, phone, caplog
) -> None:
    p = await phone()
    trunk = {
        "name": "pbx",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "inbound": {"username": "pbx", "password": "pw"},  # INVITEs get 407, none is placed
        "keepalive": 0,
    }
    assert (await bridge.post("/trunks", json=trunk)).status == 201
    made = await (await bridge.post("/call/make", json={"phone": PHONE})).json()
    cid = made["callID"]
    await wait_state(bridge, cid, "active")
    await add_phone(bridge, cid, p)
    await until(lambda: of(bridge, "participant.joined"), 10, "the phone's leg")
    service = bridge.app[TRUNKS]
    ((_, leg),) = service.legs.items()
    dialog = leg.dialog
    assert dialog is not None
    port = service.port
    rng = random.Random(4848)
    kinds = templates(port, dialog.call_id, dialog.remote_tag, dialog.local_tag)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    sent = 0
    for n in range(3000):
        udp.sendto(mutate(rng, rng.choice(kinds), n), ("127.0.0.1", port))
        sent += 1
        if n % 25 == 0:
            await asyncio.sleep(0.002)
    for n in range(300):  # TCP: a bad message costs its own connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(mutate(rng, rng.choice(kinds), 10_000 + n))
        try:
            await asyncio.wait_for(reader.read(2048), 0.05)
        except TimeoutError:
            pass
        writer.close()
        sent += 1
    udp.close()
    await asyncio.sleep(1.0)
    probe = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=p\r\nTo: <sip:bridge@127.0.0.1>\r\n"
        "Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(probe)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert parse(head).status == 200
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    ua = service.ua
    print(
        f"{sent} mutated messages: bad {ua.counts.get('bad', 0)}, dropped "
        f"{ua.datagrams.dropped if ua.datagrams else 0}, errors {len(errors)}"
    )
    assert not errors, errors[:3]
    keys = [e for e in bridge.events if e.type == "call.dtmf"]
    print(f"{len(keys)} keys taken from INFOs")
    assert keys  # the INFO parser was reached
    assert bridge.app[MANAGER].get(cid).live
