"""What the trunk user agent refuses reaches ``/metrics`` by reason
(``bridge_sip_trunk_refused_total{what,reason}``), and a refusal one source repeats is said
once at WARNING: malformed SIP, a method not implemented, a wrong digest, an INVITE for a
number the bridge does not have. Only the listener's overload reached Prometheus before; the
others were nowhere, and a malformed datagram, an UPDATE or an unknown ``X-WA-Number`` was
said never or at every INVITE."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client.parser import text_string_to_metric_families

from bridge.sip.digest import authorize

from .test_trunk_strangers import DIGEST, invite, listener


def samples(text: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` by the values of its ``labels``."""
    return {
        tuple(sample.labels[label] for label in labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_refusals_reach_metrics_by_reason_and_each_is_said_once(
    make_client, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    async with listener(make_client, tmp_path, DIGEST) as (client, port, pbx):
        loop = asyncio.get_running_loop()
        there = ("127.0.0.1", port)

        async def final(request: bytes, call_id: str, seq: int) -> bytes:
            await loop.sock_sendto(pbx, request, there)
            while True:  # past 100 Trying and earlier refusals sent again (not ACKed)
                answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 2)
                mine = f"Call-ID: {call_id}\r\n".encode() in answer
                if mine and f"CSeq: {seq} INVITE".encode() in answer and answer[8:9] != b"1":
                    return answer

        async def authorized(n: int, password: str, number: str = "") -> bytes:
            """An INVITE challenged, then sent again with a digest made with ``password``."""
            first = invite(port, n).replace(b"scan-", b"call-")
            if number:
                first = first.replace(b"Contact:", f"X-WA-Number: {number}\r\nContact:".encode())
            challenged = await final(first, f"call-{n}", 1)
            assert challenged.startswith(b"SIP/2.0 407"), challenged
            challenges = [
                line.split(b": ", 1)[1].decode()
                for line in challenged.split(b"\r\n")
                if line.startswith(b"Proxy-Authenticate: ")
            ]
            uri = f"sip:+15550001111@127.0.0.1:{port}"
            answer = authorize(challenges, "INVITE", uri, "pbx", password)
            again = (
                first.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
                .replace(b"branch=z9hG4bKscan", b"branch=z9hG4bKagain")
                .replace(b"Contact:", f"Proxy-Authorization: {answer}\r\nContact:".encode())
            )
            return await final(again, f"call-{n}", 2)

        for n in range(3):  # a header line without its colon: 400
            broken = invite(port, 100 + n).replace(b"Max-Forwards: 70", b"Max-Forwards 70")
            await loop.sock_sendto(pbx, broken, there)
            answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 2)
            assert answer.startswith(b"SIP/2.0 400"), answer
        for n in range(2):  # a method the bridge does not implement: 501
            update = invite(port, 200 + n).replace(b"INVITE", b"UPDATE")
            await loop.sock_sendto(pbx, update, there)
            answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 2)
            assert answer.startswith(b"SIP/2.0 501"), answer
        for n in range(3):
            assert (await authorized(n, "wrong")).startswith(b"SIP/2.0 403")
        for n in range(3, 6):  # the right digest, for a number the bridge does not have
            refused = await authorized(n, "right", number="+19990000000")
            assert refused.startswith(b"SIP/2.0 484") and b"unknown_number" in refused, refused
        text = await (await client.get("/metrics")).text()

    refused = samples(text, "bridge_sip_trunk_refused_total", "what", "reason")
    assert refused[("message", "bad")] == 3, refused
    assert refused[("request", "not_implemented")] == 2, refused
    assert refused[("invite", "auth")] == 3, refused
    assert refused[("invite", "unknown_number")] == 3, refused
    assert refused[("invite", "challenged")] == 6, refused
    assert refused[("invite", "overloaded")] == 0, refused
    requests = samples(text, "bridge_sip_trunk_requests_total", "method")
    assert requests[("invite",)] == 12, requests  # the malformed ones are no requests
    assert requests[("unknown",)] == 2, requests
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for said in ("malformed", "UPDATE", "wrong digest credentials", "unknown_number"):
        assert len([line for line in warned if said in line]) == 1, (said, warned)


async def test_infos_without_a_key_we_take_are_counted_and_said_once(
    make_client, tmp_path, caplog
) -> None:
    """A PBX's call placed and answered; its INFOs in that call carrying its keys in a format
    the bridge does not take are refused ``415`` with the formats it takes (``Accept``),
    counted ``info_refused`` and said once at WARNING, and the end said at INFO when an
    INFO's key is taken. Each was lost silently."""
    caplog.set_level(logging.INFO, logger="bridge")
    async with listener(make_client, tmp_path, {"allowFrom": ["127.0.0.1/32"]}) as (
        client,
        port,
        pbx,
    ):
        loop = asyncio.get_running_loop()
        there = ("127.0.0.1", port)

        async def final(request: bytes, method: str, seq: int) -> bytes:
            await loop.sock_sendto(pbx, request, there)
            while True:  # past 100 Trying, 180 Ringing and our 200 sent again
                answer = await asyncio.wait_for(loop.sock_recv(pbx, 65536), 3)
                if f"CSeq: {seq} {method}".encode() in answer and answer[8:9] != b"1":
                    return answer

        answered = await final(invite(port, 1), "INVITE", 1)
        assert answered.startswith(b"SIP/2.0 200"), answered
        to = next(h for h in answered.split(b"\r\n") if h.startswith(b"To: "))[4:].decode()
        dialog = (
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{{seq}};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:100@127.0.0.1>;tag=s\r\nTo: {to}\r\nCall-ID: scan-1\r\n"
        )
        ack = f"ACK sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n{dialog}CSeq: 1 ACK\r\n"
        await loop.sock_sendto(pbx, (ack + "Content-Length: 0\r\n\r\n").encode(), there)

        def info(seq: int, kind: str, body: str) -> bytes:
            head = f"INFO sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n{dialog}"
            head += f"CSeq: {seq} INFO\r\nContent-Type: {kind}\r\n"
            return (head + f"Content-Length: {len(body)}\r\n\r\n{body}").format(seq=seq).encode()

        for seq in (2, 3, 4):
            refused = await final(info(seq, "application/vnd.pbx.digits", "5"), "INFO", seq)
            assert refused.startswith(b"SIP/2.0 415"), refused
            # RFC 3261 §21.4.13: a 415 MUST list the formats taken, in Accept.
            assert b"\r\nAccept: application/dtmf-relay, application/dtmf\r\n" in refused
        taken = info(5, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")
        assert (await final(taken, "INFO", 5)).startswith(b"SIP/2.0 200")
        refer = f"REFER sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n{dialog}CSeq: 6 REFER\r\n"
        refer = (refer + "Content-Length: 0\r\n\r\n").format(seq=6).encode()
        assert (await final(refer, "REFER", 6)).startswith(b"SIP/2.0 400")  # no Refer-To
        text = await (await client.get("/metrics")).text()
        bye = f"BYE sip:+15550001111@127.0.0.1:{port} SIP/2.0\r\n{dialog}CSeq: 7 BYE\r\n"
        bye = (bye + "Content-Length: 0\r\n\r\n").format(seq=7).encode()
        assert (await final(bye, "BYE", 7)).startswith(b"SIP/2.0 200")  # nothing left to end

    refused = samples(text, "bridge_sip_trunk_refused_total", "what", "reason")
    assert refused[("request", "info_refused")] == 3, refused
    assert refused[("request", "refer_refused")] == 1, refused
    # In-dialog INFO and REFER are counted under their own names (they were ``unknown``).
    requests = samples(text, "bridge_sip_trunk_requests_total", "method")
    assert requests[("info",)] == 4 and requests[("refer",)] == 1, requests
    assert requests.get(("unknown",), 0) == 0, requests
    said = [
        (r.levelname, r.getMessage()) for r in caplog.records if "info_refused" in r.getMessage()
    ]
    assert [level for level, _ in said] == ["WARNING", "INFO"], said
    assert "vnd.pbx.digits" in said[0][1] and "3 refused" in said[1][1], said
