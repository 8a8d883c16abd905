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


PHONE_OFFER = (
    "v=0\r\no=phone 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


class _PbxInvite(_Tx):
    """A PBX's INVITE to a WhatsApp user, with its SDP offer."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.req.uri = "sip:+15550003333@bridge.example"
        self.req.body = PHONE_OFFER.encode()
        self.key = (f"call-{n}", f"z9hG4bK{n}")
        self.conn = _Peer()


class _Peer:
    """The connection an INVITE came on: its source is what refusals are said by."""

    peer = ("192.0.2.10", 5060)


def test_pbx_invites_whose_whatsapp_calls_end_unanswered_leave_nothing_behind(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A PBX's INVITE places a WhatsApp call that rings and ends unanswered (no answer,
    declined, busy: the PBX gets the final response, never sends an ACK): nothing of those
    INVITEs stays with the trunk service, whether or not a call is ever answered."""
    import gc
    import uuid
    import weakref
    from types import SimpleNamespace

    from bridge.calls.model import Call, CallState, Direction, EndReason
    from bridge.config import settings_for_tests
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.store import LocalStore, Sealing
    from bridge.numbers.trunks import Trunk
    from bridge.trunks import service as trunk_service

    trunk = Trunk("pbx", "PBX", "sip:pbx.example")
    monkeypatch.setattr(trunk_service, "identify", lambda *_: (trunk, None))
    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    monkeypatch.setattr(catalog, "resolve_from", lambda *_, **__: SimpleNamespace(tenant_id=""))
    service = trunk_service.TrunkService(settings_for_tests(data_dir=str(tmp_path)), catalog)
    made: list[Call] = []

    class Manager:
        async def make(self, phone: str, metadata: dict[str, Any], **_: Any) -> Call:
            made.append(
                Call(
                    id=uuid.uuid4().hex,
                    peer=f"{phone}@s.whatsapp.net",
                    direction=Direction.OUTBOUND,
                    owner="w",
                    engine_call_id=uuid.uuid4().hex,
                    state=CallState.CALLING,
                )
            )
            return made[-1]

    service.manager = Manager()  # type: ignore[assignment]

    async def run() -> list[weakref.ref[_PbxInvite]]:
        invites = []
        for n in range(ROUNDS):
            tx = _PbxInvite(n)
            invites.append(weakref.ref(tx))
            await service.invite(tx)  # type: ignore[arg-type]
            call = made.pop()
            call.transition(CallState.ENDED, EndReason.NO_ANSWER)
            service.observe(SimpleNamespace(type="call.ended"), call)
            await service._tasks.join()  # the PBX's final response sent
            assert tx.answers == [480]
            del tx, call
        return invites

    invites = asyncio.run(run())
    gc.collect()
    assert service.placing == {}
    kept = [ref() for ref in invites if ref() is not None]
    assert kept == [], f"{len(kept)} of {ROUNDS} ended INVITEs still kept"


def test_outbound_sip_connections_are_let_go_when_they_close() -> None:
    """Each destination the bridge sends SIP to (a route set's next hop, a trunk, Meta's edge)
    gets a connection, reused while open; once it closed it is forgotten, not kept under its
    destination for the life of the process."""
    import gc
    import weakref

    from bridge.sip.listener import Listener

    async def hang_up_at_once(_reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def ignore(*_: Any) -> None:
        pass

    async def dial_each(listener: Listener, servers: list[Any]) -> list[weakref.ref[Any]]:
        conns = []
        for server in servers:
            conn = await listener.dial(server.sockets[0].getsockname()[:2], None)
            conns.append(weakref.ref(conn))
            await asyncio.wait_for(conn.closed.wait(), 5)  # the far end hung up
        return conns

    async def run() -> None:
        listener = Listener(None, ignore, ignore)
        servers = [await asyncio.start_server(hang_up_at_once, "127.0.0.1", 0) for _ in range(20)]
        try:
            conns = await dial_each(listener, servers)
            for _ in range(100):  # each reader task ends with its connection
                if not listener.connections and not len(listener._tasks):
                    break
                await asyncio.sleep(0.01)
            gc.collect()
            kept = [ref for ref in conns if ref() is not None]
            assert kept == [], f"{len(kept)} of {len(conns)} closed connections kept"
        finally:
            await listener.close()
            for server in servers:
                server.close()

    asyncio.run(run())


def test_webhooks_naming_unknown_meta_numbers_keep_only_a_short_name_each(caplog: Any) -> None:
    """Meta's front door remembers (to log once) each Meta number id that no number here has,
    and each whose signature failed: what a stranger names there is clipped, so a flood of
    256 KiB ids keeps a few bytes each, not the ids (10 000 of them: 2.5 GB before)."""
    import json
    from types import SimpleNamespace

    from bridge.numbers.front_door import refused_signature, webhook_engine
    from bridge.numbers.retired import RetiredEngines

    class Signed:
        def receive_webhook(self, raw: bytes, headers: Any) -> bool:
            return True

        def webhook_calls(self, raw: bytes) -> Any:
            return None

        def verify_subscription(self, query: Any) -> str:
            return ""

        def carries_call_in(self, raw: bytes) -> bool:
            return False

        def also_signed_with(self, secret: Any) -> None:
            pass

    catalog = SimpleNamespace(
        by_meta_id=lambda _id: None,
        by_phone=lambda _p: None,
        deleted_meta=lambda _id: None,
        default=None,
    )
    switchboard = SimpleNamespace(
        engines={"default": Signed()},
        retired=RetiredEngines(list, lambda _n: False, lambda: None),
        catalog=catalog,
        unknown_meta_ids=set(),
        refused_meta_ids=set(),
    )

    def body(n: int) -> bytes:
        huge = f"{n:06d}" + "9" * (200 * 1024)
        value = {"metadata": {"phone_number_id": huge}}
        entry = {"changes": [{"field": "calls", "value": value}]}
        return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()

    for n in range(200):
        raw = body(n)
        assert webhook_engine(switchboard, raw, {}) is None  # acknowledged, ignored
        refused_signature(switchboard, raw, "bad signature")  # type: ignore[arg-type]
    for said in (switchboard.unknown_meta_ids, switchboard.refused_meta_ids):
        assert len(said) == 200  # each told once
        assert max(len(name) for name in said) <= 64
    assert max(len(r.getMessage()) for r in caplog.records) < 300


def test_a_leg_lent_across_workers_is_given_back_when_saying_so_fails() -> None:
    """The agent's worker lends its leg to a call on another worker, then says so on the
    desk's bus: when that fails (Redis away) or the agent's session ends meanwhile (its task
    cancelled), the stream closes and the leg parks again, as when the call ends — before, the
    leg stayed attached to that call (the agent unusable) and its stream's tasks ran on."""
    from types import SimpleNamespace

    from bridge.desk.lending import Lending

    class Channel:
        def __init__(self) -> None:
            self.closed = False
            self.gone = asyncio.Event()

        async def send(self, pcm: Any) -> None:
            pass

        async def recv(self) -> Any:
            await self.gone.wait()
            raise ConnectionError("stream closed")

        async def close(self) -> None:
            self.closed = True
            self.gone.set()

    class Leg:
        usable = True
        attached_to: str | None = None

        def attach(self, call_id: str, *_: Any) -> None:
            self.attached_to = call_id

        def release(self) -> None:
            self.attached_to = None

    class Store:
        def __init__(self) -> None:
            self.fail = True

        async def publish(self, message: dict[str, Any]) -> None:
            if self.fail:
                raise OSError("Redis unreachable")
            await asyncio.Event().wait()  # a slow Redis: the session ends meanwhile

    async def run() -> None:
        store = Store()
        channels: list[Channel] = []

        async def open_stream(url: str, worker: str, call_id: str) -> Channel:
            channels.append(Channel())
            return channels[-1]

        desk = SimpleNamespace(store=store, worker_id="a")
        lending = Lending(desk, open_stream, "http://a")  # type: ignore[arg-type]
        legs = []
        for n in range(100):
            leg = Leg()
            legs.append(leg)
            session = SimpleNamespace(key=("t", f"agent-{n}"), leg=leg)
            message = {"callID": f"call-{n}", "url": "http://b", "worker": "b"}
            store.fail = n % 2 == 0
            task = asyncio.ensure_future(lending._lend(session, message))  # type: ignore[arg-type]
            if store.fail:
                try:
                    await task
                except OSError:
                    pass
            else:
                await asyncio.sleep(0.001)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        assert all(channel.closed for channel in channels)
        assert all(leg.attached_to is None for leg in legs)
        assert not lending._lent

    asyncio.run(run())
