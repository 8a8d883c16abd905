"""The capabilities of an engine that takes webhooks (``POST /engine/webhook``): what a
webhook is about, read before it is checked (a cluster's router routes by it), and the engine
that checks and takes it, or whose sender signs it (Meta)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

WEBHOOK_LIMIT = 256 * 1024
"""Largest webhook body an engine takes (a Cloud API webhook: a few calls with their SDP)."""


@dataclass(frozen=True)
class WebhookCalls:
    """What a webhook is about, read from its raw body before anything checks it (a cluster
    routes the webhook by it; the worker that handles it verifies it)."""

    engine_call_ids: tuple[str, ...] = ()
    """The engine's ids of the calls the webhook names, in order (duplicates kept)."""
    new_call: bool = False
    """It offers a call the bridge has not seen yet (it rings on the worker that takes it)."""


@runtime_checkable
class WebhookEngine(Protocol):
    """An engine that takes events pushed to ``POST /engine/webhook``."""

    def receive_webhook(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """Check and take one webhook body (raw, as sent); whether it was about calls.

        Raises :class:`~bridge.errors.BadRequest` (or ``Unauthorized``, ``AtCapacity``) for
        a body it refuses: the sender gets that 4xx/503."""

    def webhook_calls(self, raw: bytes) -> WebhookCalls:
        """The calls a webhook body names, without verifying it (empty for a malformed body,
        or when any worker may handle it)."""


@runtime_checkable
class SignedWebhookEngine(WebhookEngine, Protocol):
    """A webhook engine whose webhooks carry their own authentication (a signature the engine
    checks), so ``/engine/webhook`` takes no API token; its sender verifies the URL first."""

    def verify_subscription(self, query: Mapping[str, str]) -> str:
        """``GET /engine/webhook``: the text to answer the sender's verification request
        with (raises :class:`~bridge.errors.Forbidden` when it does not match)."""

    def carries_call_in(self, raw: bytes) -> bool:
        """Whether the webhook body (raw, unverified) names a live call of this engine's (its
        webhooks name the number, not the engine: a number rebuilt meanwhile has its live
        calls on its old engine); read whether or not :meth:`webhook_calls` names them (it
        names none where any worker may take the webhook)."""

    def also_signed_with(self, secret: Callable[[], str]) -> None:
        """Retired (its number rebuilt or deleted, its live calls kept): take webhooks signed
        with ``secret()`` too, the number's secret now (the sender signs with the one it has,
        rotated meanwhile; empty: none)."""
