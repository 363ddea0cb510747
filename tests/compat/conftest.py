"""Shared helpers for the compatibility tests: run with the real leap0 SDK against a palisade
daemon (LEAP0_BASE_URL / LEAP0_API_KEY), normally started by crates/cli/tests/compat.rs inside
a testbed world."""

import os

import pytest
from leap0 import Leap0Client


@pytest.fixture(scope="session")
def client():
    assert os.environ.get("LEAP0_BASE_URL"), "LEAP0_BASE_URL must point at a palisade daemon"
    return Leap0Client()


@pytest.fixture
def cleanup(client):
    made = []
    yield made
    for sb in made:
        try:
            client.sandboxes.delete(sb.id)
        except Exception:  # already gone
            pass
