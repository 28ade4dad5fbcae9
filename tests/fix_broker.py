"""Broker fixtures: a private Mosquitto with the project's config on a free port, and a unique
topic prefix per test so tests never see each other's messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from basewatch.localbroker import LocalBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"bwtest/{uuid.uuid4().hex[:10]}"
