"""Restart backoff and the rotating service logs."""

from __future__ import annotations

from pathlib import Path

from shoal.supervisor._backoff import Backoff
from shoal.supervisor._logs import LogSink, ServiceLog


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    backoff = Backoff()
    delays = [backoff.after_exit(ran_for=0.5) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_resets_after_sixty_seconds_of_health() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.after_exit(ran_for=1)
    assert backoff.crash_looping
    assert backoff.after_exit(ran_for=61) == 1
    assert not backoff.crash_looping


def test_three_quick_crashes_make_a_crash_loop() -> None:
    backoff = Backoff()
    backoff.after_exit(0.1)
    backoff.after_exit(0.1)
    assert not backoff.crash_looping
    backoff.after_exit(0.1)
    assert backoff.crash_looping


def test_service_log_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    log = ServiceLog(tmp_path / "svc.log", max_bytes=200, backups=2)
    for i in range(30):
        log.write("svc-1", f"line {i:02d} " + "x" * 20)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["svc.log", "svc.log.1", "svc.log.2"]
    assert "line 29" in (tmp_path / "svc.log").read_text()
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())


def test_sink_keeps_the_last_lines_per_instance(tmp_path: Path) -> None:
    shown: list[tuple[str, str]] = []
    sink = LogSink(tmp_path, console=lambda inst, text: shown.append((inst, text)), keep=3)
    for i in range(5):
        sink.line("svc", "svc-1", f"l{i}")
    sink.close()
    assert sink.tail("svc-1") == ["l2", "l3", "l4"]
    assert shown[-1] == ("svc-1", "l4")
    assert (tmp_path / "svc.log").read_text().count("svc-1 l") == 5
