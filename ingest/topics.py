"""The MQTT topic contract: ``<prefix>/<account_id>/<asset_id>/(telemetry|event)``."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import InvalidPayload
from core.ids import is_identifier

CHANNELS = ("telemetry", "event")


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic."""

    account_id: str
    asset_id: str
    channel: str


def parse_topic(topic: str, prefix: str) -> Topic:
    """Split a device topic; raise :class:`InvalidPayload` (field ``topic``) when it breaks the
    contract."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise InvalidPayload("topic", f"does not start with {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        raise InvalidPayload("topic", "expected <prefix>/<account_id>/<asset_id>/<channel>")
    account_id, asset_id, channel = parts
    if not is_identifier(account_id):
        raise InvalidPayload("topic", "account id is not an identifier ([A-Za-z0-9_.-]{1,64})")
    if not is_identifier(asset_id):
        raise InvalidPayload("topic", "asset id is not an identifier ([A-Za-z0-9_.-]{1,64})")
    if channel not in CHANNELS:
        raise InvalidPayload("topic", f"channel must be telemetry or event, got {channel[:64]!r}")
    return Topic(account_id, asset_id, channel)


def subscriptions(prefix: str, share_group: str) -> list[str]:
    """Topic filters the ingester subscribes to (shared when ``share_group`` is set)."""
    filters = [f"{prefix}/+/+/{channel}" for channel in CHANNELS]
    return [f"$share/{share_group}/{f}" for f in filters] if share_group else filters


def device_topic(prefix: str, account_id: str, asset_id: str, channel: str = "telemetry") -> str:
    """The topic a device publishes on."""
    return f"{prefix}/{account_id}/{asset_id}/{channel}"
