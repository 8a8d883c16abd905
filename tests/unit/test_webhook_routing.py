"""The calls a webhook names, as a cluster's router reads them (``WebhookEngine.webhook_calls``):
for the Cloud API, from Meta's envelope (Meta's Cloud API Calling docs: ``entry`` →
``changes`` → ``value`` → ``calls`` / ``statuses``), read by the same parser the engine works
with; nothing for what is malformed; nothing to route by for a polled engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import load_settings
from bridge.engines import (
    CloudApiEngine,
    SignedWebhookEngine,
    WebhookCalls,
    WebhookEngine,
    ZuckZapGoEngine,
)
from bridge.engines.cloudapi.webhook import webhook_calls

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def envelope(*entries: list[dict[str, Any]]) -> bytes:
    """Meta's envelope: one entry per argument, each a list of change values."""
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": f"WABA{n}",
                    "changes": [
                        {
                            "field": "calls",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"phone_number_id": "1234567890"},
                                **value,
                            },
                        }
                        for value in values
                    ],
                }
                for n, values in enumerate(entries)
            ],
        }
    ).encode()


def connect(wacid: str, direction: str = "USER_INITIATED", sdp_type: str = "offer") -> dict:
    return {
        "id": wacid,
        "from": "15550001111",
        "to": "15550009999",
        "event": "connect",
        "direction": direction,
        "timestamp": "1750000000",
        "session": {"sdp_type": sdp_type, "sdp": OFFER},
    }


def terminate(wacid: str, status: str = "COMPLETED") -> dict:
    return {
        "id": wacid,
        "from": "15550001111",
        "to": "15550009999",
        "event": "terminate",
        "direction": "USER_INITIATED",
        "status": status,
        "duration": 12,
    }


def status(wacid: str, value: str) -> dict:
    return {"id": wacid, "type": "call", "status": value, "recipient_id": "15550001111"}


def test_several_calls_in_one_envelope_in_order() -> None:
    raw = envelope(
        [
            {"calls": [terminate("wacid.A"), connect("wacid.B")]},
            {"statuses": [status("wacid.C", "RINGING"), status("wacid.A", "ACCEPTED")]},
        ],
        [{"calls": [terminate("wacid.D", "FAILED")], "statuses": [status("wacid.E", "REJECTED")]}],
    )
    about = webhook_calls(raw)
    # Within a value, calls come before statuses; entries and changes keep their order.
    names = ("wacid.A", "wacid.B", "wacid.C", "wacid.A", "wacid.D", "wacid.E")
    assert about.engine_call_ids == names
    assert about.new_call  # wacid.B is a user's offer


def test_statuses_name_calls_but_offer_none() -> None:
    raw = envelope([{"statuses": [status("wacid.X", "RINGING"), status("wacid.Y", "ACCEPTED")]}])
    assert webhook_calls(raw) == WebhookCalls(("wacid.X", "wacid.Y"), new_call=False)


@pytest.mark.parametrize(
    ("item", "new"),
    [
        (connect("wacid.N"), True),  # a user calls the business: ring it somewhere
        (connect("wacid.N", "BUSINESS_INITIATED", "answer"), False),  # our dial's answer
        (connect("wacid.N", "USER_INITIATED", "answer"), False),
        (connect("wacid.N", "BUSINESS_INITIATED", "offer"), False),  # not the user's call
        (terminate("wacid.N"), False),
    ],
)
def test_only_a_users_connect_offer_is_a_new_call(item: dict, new: bool) -> None:
    assert webhook_calls(envelope([{"calls": [item]}])) == WebhookCalls(("wacid.N",), new)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"null",
        b"[1, 2]",
        b'"entry"',
        b"{}",
        b'{"entry": "no"}',
        b'{"entry": [1, "x", null, {"changes": "no"}]}',
        b'{"entry": [{"changes": [1, {"field": "calls", "value": []}]}]}',
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
    ],
)
def test_malformed_bodies_name_no_call(raw: bytes) -> None:
    assert webhook_calls(raw) == WebhookCalls()


def test_malformed_items_are_skipped_and_the_rest_kept() -> None:
    raw = envelope(
        [
            {
                "calls": [
                    "not an object",
                    {"event": "connect"},  # no id
                    {"id": "wacid.Q", "event": "ringing"},  # not a call event
                    {"id": ["wacid.R"], "event": "terminate"},  # id of the wrong type
                    terminate("wacid.S"),
                ],
                "statuses": [{"id": "wacid.T"}, status("wacid.U", "RINGING"), 7],
            },
            {"calls": {"id": "wacid.V"}},  # not a list
        ]
    )
    assert webhook_calls(raw) == WebhookCalls(("wacid.S", "wacid.U"), new_call=False)


def test_other_fields_of_the_business_account_are_not_calls() -> None:
    body = json.loads(envelope([{"calls": [connect("wacid.M")]}]))
    body["entry"][0]["changes"][0]["field"] = "messages"
    assert webhook_calls(json.dumps(body).encode()) == WebhookCalls()


def _settings(**env: str) -> Any:
    return load_settings([], {f"BRIDGE_{k.upper()}": v for k, v in env.items()})


def test_engines_answer_the_routers_question() -> None:
    cloud = CloudApiEngine(
        _settings(
            engine="cloudapi",
            engine_token="t",
            cloudapi_phone_number_id="1234567890",
            cloudapi_app_secret="s",
            cloudapi_verify_token="v",
        )
    )
    assert isinstance(cloud, SignedWebhookEngine)
    raw = envelope([{"calls": [connect("wacid.C")]}])
    assert cloud.webhook_calls(raw) == WebhookCalls(("wacid.C",), new_call=True)
    # ZuckZapGo's webhooks only hurry the poll every worker runs: handled where they land.
    zuck = ZuckZapGoEngine.from_settings(
        _settings(engine="zuckzapgo", engine_url="http://127.0.0.1:1", engine_token="z")
    )
    assert isinstance(zuck, WebhookEngine) and not isinstance(zuck, SignedWebhookEngine)
    offer = {"type": "v1.call.offer", "data": {"callId": "Z1", "from": "1@s.whatsapp.net"}}
    assert zuck.webhook_calls(json.dumps(offer).encode()) == WebhookCalls()
