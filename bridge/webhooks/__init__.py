"""Webhooks out: every call event POSTed, signed per Standard Webhooks, to the call's
``statusCallback`` or ``BRIDGE_WEBHOOK_URL``. Fed by ``CallEvents.observe``; sits beside the
API (it imports ``calls``, nothing below imports it)."""

from .delivery import WebhookService
from .destination import Delivery, Destination

__all__ = ["Delivery", "Destination", "WebhookService"]
