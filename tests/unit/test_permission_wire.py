"""Call permissions on the wire (pure): the request bodies, Meta's permission read back, the
user's replies, and when a used-up limit lets the next request through."""

from __future__ import annotations

from bridge.engines.cloudapi.permission_wire import (
    messages_events,
    next_allowed,
    permission_view,
    request_message,
)
from bridge.timefmt import iso_utc

META_READ = {
    "messaging_product": "whatsapp",
    "permission": {"status": "temporary", "expiration_time": 1745343479},
    "actions": [
        {
            "action_name": "send_call_permission_request",
            "can_perform_action": False,
            "limits": [
                {
                    "time_period": "PT24H",
                    "max_allowed": 1,
                    "current_usage": 1,
                    "limit_expiration_time": 1745622600,
                },
                {"time_period": "P7D", "max_allowed": 2, "current_usage": 1},
            ],
        },
        {
            "action_name": "start_call",
            "can_perform_action": True,
            "limits": [{"time_period": "PT24H", "max_allowed": 100, "current_usage": 2}],
        },
    ],
}


def test_request_bodies() -> None:
    interactive = request_message("5521", None)
    assert interactive == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "5521",
        "type": "interactive",
        "interactive": {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
        },
    }
    template = request_message("5521", {"name": "call_me", "language": "pt_BR"})
    assert template["type"] == "template"
    assert template["template"] == {"name": "call_me", "language": {"code": "pt_BR"}}


def test_permission_view_and_next_allowed() -> None:
    view = permission_view("5521", META_READ)
    assert view["status"] == "temporary" and view["expiresAt"] == iso_utc(1745343479)
    assert (view["canCall"], view["canRequest"]) == (True, False)
    assert view["limits"][0] == {
        "action": "send_call_permission_request",
        "timePeriod": "PT24H",
        "maxAllowed": 1,
        "currentUsage": 1,
        "resetsAt": iso_utc(1745622600),
    }
    assert next_allowed(view, "send_call_permission_request") == iso_utc(1745622600)
    assert next_allowed(view, "start_call") is None  # not used up
    empty = permission_view("5521", {"permission": "x", "actions": [5, {"limits": "y"}]})
    assert (empty["status"], empty["canCall"], empty["limits"]) == ("no_permission", False, [])


def test_replies_and_senders_from_a_messages_webhook() -> None:
    def reply(**fields: object) -> dict:
        return {
            "from": "5521",
            "type": "interactive",
            "interactive": {"type": "call_permission_reply", "call_permission_reply": fields},
        }

    body = {
        "entry": [
            {
                "changes": [
                    {"field": "calls", "value": {"messages": [reply(response="accept")]}},
                    {
                        "field": "messages",
                        "value": {
                            "messages": [
                                {"from": "5599", "type": "text", "text": {"body": "hi"}},
                                reply(
                                    response="accept",
                                    is_permanent=False,
                                    expiration_timestamp=1745343479,
                                    response_source="automatic",
                                ),
                                reply(response="maybe"),
                                {"from": "+55", "type": "text"},
                            ]
                        },
                    },
                ]
            }
        ]
    }
    replies, senders, bad = messages_events(body)
    assert senders == ["5599", "5521", "5521"] and bad == 2
    assert [r.event() for r in replies] == [
        {
            "phone": "5521",
            "response": "accept",
            "permanent": False,
            "expiresAt": iso_utc(1745343479),
            "source": "automatic",
        }
    ]
