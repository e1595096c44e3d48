"""Series readiness: quiet period, association release, one event per burst, one thread."""

from __future__ import annotations

import threading
import time

from app.core.events import SeriesReady
from app.core.readiness import SeriesReadinessTracker


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[float, SeriesReady, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: SeriesReady) -> None:
        with self.lock:
            self.events.append((time.monotonic(), event, threading.current_thread().name))

    def wait(self, n: int, timeout: float = 3.0) -> None:
        end = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < end:
            time.sleep(0.01)


def test_quiet_period_counts_from_the_last_instance() -> None:
    got = Collector()
    tracker = SeriesReadinessTracker(0.4, got)
    tracker.start()
    try:
        start = time.monotonic()
        for i in range(4):
            if i:
                time.sleep(0.2)
            last = time.monotonic()
            tracker.instance_arrived("1.2", "1.2.3", association="A")
        got.wait(1, timeout=3)
        assert len(got.events) == 1
        when, event, thread = got.events[0]
        assert event == SeriesReady("1.2", "1.2.3", "quiet period")
        assert 0.39 <= when - last <= 1.0
        assert when - start > 0.99  # not ready in the middle of the burst
        assert thread == "series-readiness"
    finally:
        tracker.stop()


def test_release_makes_ready_at_once_but_only_when_the_last_carrier_is_released() -> None:
    got = Collector()
    tracker = SeriesReadinessTracker(30.0, got)
    tracker.start()
    try:
        tracker.instance_arrived("1.2", "1.2.3", association="A")
        tracker.instance_arrived("1.2", "1.2.3", association="B")  # same series, second sender
        tracker.instance_arrived("1.2", "1.2.4", association="A")
        released = time.monotonic()
        tracker.association_ended("A", released=True)
        got.wait(1)
        assert [e.series_uid for _, e, _ in got.events] == ["1.2.4"]  # 1.2.3 still arriving on B
        assert got.events[0][0] - released < 0.5
        tracker.association_ended("B", released=True)
        got.wait(2)
        assert [(e.series_uid, e.why) for _, e, _ in got.events] == [("1.2.4", "association released"),
                                                                     ("1.2.3", "association released")]
    finally:
        tracker.stop()


def test_abort_leaves_it_to_the_quiet_period() -> None:
    got = Collector()
    tracker = SeriesReadinessTracker(0.3, got)
    tracker.start()
    try:
        tracker.instance_arrived("1.2", "1.2.3", association="A")
        tracker.association_ended("A", released=False)
        time.sleep(0.15)
        assert got.events == []
        got.wait(1)
        assert [e.why for _, e, _ in got.events] == ["quiet period"]
    finally:
        tracker.stop()


def test_once_per_burst_and_again_for_a_later_burst() -> None:
    got = Collector()
    tracker = SeriesReadinessTracker(0.2, got)
    tracker.start()
    try:
        for _ in range(3):
            tracker.instance_arrived("1.2", "1.2.3")
        time.sleep(0.5)
        assert len(got.events) == 1
        tracker.instance_arrived("1.2", "1.2.3")  # a late instance: a second burst
        got.wait(2)
        time.sleep(0.3)
        assert len(got.events) == 2
        assert tracker.pending() == []
    finally:
        tracker.stop()


def test_many_series_share_one_thread_and_a_failing_consumer_does_not_stop_it() -> None:
    seen: list[str] = []

    def consumer(event: SeriesReady) -> None:
        seen.append(event.series_uid)
        if event.series_uid == "1.2.0":
            raise RuntimeError("consumer bug")

    tracker = SeriesReadinessTracker(0.2, consumer)
    before = threading.active_count()
    tracker.start()
    try:
        for i in range(200):
            tracker.instance_arrived("1.2", f"1.2.{i}")
        assert threading.active_count() == before + 1
        end = time.monotonic() + 3
        while len(seen) < 200 and time.monotonic() < end:
            time.sleep(0.02)
        assert sorted(seen) == sorted(f"1.2.{i}" for i in range(200))
    finally:
        tracker.stop()


def test_stop_with_flush_emits_pending_series() -> None:
    got = Collector()
    tracker = SeriesReadinessTracker(60.0, got)
    tracker.start()
    tracker.instance_arrived("1.2", "1.2.3")
    tracker.stop(flush=True)
    assert [e.series_uid for _, e, _ in got.events] == ["1.2.3"]
