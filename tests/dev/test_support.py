"""The shared test helpers behave as documented."""

from __future__ import annotations

import socket

import pytest

from tests.support import assert_eventually, free_port, libpq_url, new_task_queue


async def test_assert_eventually_retries_until_the_check_passes() -> None:
    calls: list[int] = []

    async def third_time_lucky() -> str:
        calls.append(1)
        assert len(calls) >= 3, "not yet"
        return "done"

    assert await assert_eventually(third_time_lucky, timeout=5, interval=0.01) == "done"
    assert len(calls) == 3


async def test_assert_eventually_gives_up_with_the_last_failure() -> None:
    with pytest.raises(AssertionError, match="still returned False"):
        await assert_eventually(lambda: False, timeout=0.1, interval=0.01)


async def test_assert_eventually_does_not_retry_real_errors() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await assert_eventually(broken, timeout=5, interval=0.01)
    assert calls == [1]


def test_free_ports_are_bindable_and_distinct() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_small_helpers() -> None:
    assert new_task_queue("x") != new_task_queue("x")
    assert new_task_queue("x").startswith("x-")
    assert libpq_url("postgresql+psycopg://postgres@h:1/db") == "postgresql://postgres@h:1/db"
