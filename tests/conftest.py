"""Shared fixtures: a real Tansu broker, TLS material, unique topics, free loopback ports.

Everything listens on 127.0.0.1 only and every process a fixture starts is stopped by pid.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings

from collector.broker import EmbeddedBroker, TopicSpec, free_port
from collector.devcerts import DevCerts, make_dev_certs

# A hypothesis deadline is a timing assertion: on this shared 2-core machine a 200 ms
# example deadline fails at random (seen in test_batch_builder, test_agent_spool).
hypothesis_settings.register_profile("collector", deadline=None)
hypothesis_settings.load_profile("collector")

_topic_ids = itertools.count()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the session. Tests that pause or kill it start their own."""
    b = EmbeddedBroker()
    asyncio.run(b.start())
    try:
        yield b
    finally:
        asyncio.run(b.stop())


@pytest_asyncio.fixture
async def own_broker() -> AsyncIterator[EmbeddedBroker]:
    """A broker of the test's own (for SIGSTOP / SIGKILL faults)."""
    b = EmbeddedBroker()
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def make_topic(b: EmbeddedBroker, partitions: int = 3, prefix: str = "t") -> str:
    name = f"{prefix}-{os.getpid()}-{next(_topic_ids)}-{uuid.uuid4().hex[:6]}"
    await b.create_topics([TopicSpec(name, partitions, 3_600_000)])
    return name


@pytest_asyncio.fixture
async def topic(broker: EmbeddedBroker) -> str:
    """A fresh topic with 3 partitions on the session broker."""
    return await make_topic(broker)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return make_dev_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
