"""Call permissions on the wire (pure): the request bodies, Meta's permission read back, the
user's replies, and when a used-up limit lets the next request through."""

from __future__ import annotations

from bridge.engines.cloudapi.graph import addressed
from bridge.engines.cloudapi.permission_wire import (
    UserMoved,
    call_button_message,
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
                                {
                                    "from": "5599",
                                    "timestamp": "1745300000",
                                    "type": "text",
                                    "text": {"body": "hi"},
                                },
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
    replies, senders, moves, bad = messages_events(body)
    assert senders == [("5599", 1745300000), ("5521", None), ("5521", None)]  # when written
    assert bad == 2 and moves == []
    assert [r.event() for r in replies] == [
        {
            "phone": "5521",
            "response": "accept",
            "permanent": False,
            "expiresAt": iso_utc(1745343479),
            "source": "automatic",
        }
    ]


BSUID = "US.13491208655302741918"


def test_a_user_who_shows_no_phone_is_named_by_bsuid_both_ways() -> None:
    """Meta's "Business-scoped user IDs": ``recipient`` instead of ``to`` when sending and
    reading, ``from_user_id`` instead of ``from`` when a user writes or answers."""
    asked = request_message(BSUID, None)
    assert asked["recipient"] == BSUID and "to" not in asked
    assert request_message("5521", None)["to"] == "5521"
    assert call_button_message(BSUID, {"text": "call us"})["recipient"] == BSUID
    assert addressed(BSUID, "user_wa_id") == {"recipient": BSUID}  # GET call_permissions
    assert addressed("5521", "user_wa_id") == {"user_wa_id": "5521"}
    reply = {
        "from_user_id": BSUID,
        "type": "interactive",
        "interactive": {
            "type": "call_permission_reply",
            "call_permission_reply": {"response": "accept", "response_source": "user_action"},
        },
    }
    moved = {
        "from_user_id": BSUID,
        "type": "system",
        "system": {"type": "user_changed_user_id", "user_id": "US.24817305912873645029"},
    }
    body = {"entry": [{"changes": [{"field": "messages", "value": {"messages": [reply, moved]}}]}]}
    replies, senders, moves, bad = messages_events(body)
    assert senders == [(BSUID, None)] and bad == 0  # a system message is not the user writing
    assert moves == [UserMoved(BSUID, "US.24817305912873645029")]
    event = replies[0].event()
    assert (event["phone"], event["userId"], event["response"]) == (None, BSUID, "accept")
