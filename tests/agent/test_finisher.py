"""The agent's last pipeline stage: order kept, failures contained, nothing lost on close."""

from __future__ import annotations

import threading
import time

import pytest

from edge.agent.finisher import Finisher


def test_jobs_finish_in_order_on_another_thread() -> None:
    done: list[tuple[int, str]] = []
    f: Finisher[int] = Finisher(lambda j: done.append((j, threading.current_thread().name)), maxsize=2)
    for j in range(200):  # more than maxsize: put() blocks until there is room, never drops
        f.put(j)
    assert f.close(10)
    assert [j for j, _ in done] == list(range(200))
    assert {name for _, name in done} == {"edge-finish"}


def test_a_failing_job_does_not_stop_the_ones_behind_it(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    def fn(j: int) -> None:
        if j == 3:
            raise RuntimeError("disk on fire")
        done.append(j)

    f: Finisher[int] = Finisher(fn)
    for j in range(6):
        f.put(j)
    assert f.close(10)
    assert done == [0, 1, 2, 4, 5]
    assert "disk on fire" in caplog.text


def test_close_waits_for_slow_jobs_and_refuses_new_ones() -> None:
    done: list[int] = []

    def slow(j: int) -> None:
        time.sleep(0.05)
        done.append(j)

    f: Finisher[int] = Finisher(slow)
    for j in range(5):
        f.put(j)
    assert f.close(10)  # returns only once the five are through
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="closed"):
        f.put(6)


def test_maxsize_is_validated() -> None:
    with pytest.raises(ValueError, match="maxsize must be at least 1, got 0"):
        Finisher(lambda j: None, maxsize=0)
