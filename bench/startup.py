"""Whole-app start and stop, and the memory of one instance, each against bare uvicorn.

up:    cold `shoal up --detach DIR` until every instance is ready (the command
       returns then), versus starting the same ASGI services as bare uvicorn
       processes until each answers HTTP. Both include interpreter start-up.
down:  `shoal down DIR` until nothing of the app runs, versus SIGTERM to the bare
       uvicorn processes until they exit.
rss:   resident memory of one instance under `shoal serve` versus the same app
       under bare uvicorn, both idle after one request.

    python bench/startup.py [--app examples/shop] [--rounds 3] [--service catalog]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from shoal.control._state import pid_alive
from shoal.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]
SHOAL = [sys.executable, "-m", "shoal"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_app(source: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="shoal-bench-")) / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".shoal", "__pycache__"))
    return target


def ps_rows(app: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*SHOAL, "ps", str(app), "--json"], env=clean_env(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def shoal_up_down(app: Path) -> tuple[float, float]:
    start = time.perf_counter()
    up = subprocess.run([*SHOAL, "up", str(app), "--detach"], env=clean_env(),
                        capture_output=True, text=True, check=False)  # fmt: skip
    up_s = time.perf_counter() - start
    if up.returncode != 0:
        raise SystemExit(f"shoal up failed:\n{up.stdout}{up.stderr}")
    rows = ps_rows(app)
    supervisor = json.loads((app / ".shoal" / "control.json").read_text())["pid"]
    pids = [r["pid"] for r in rows if r["pid"]] + [supervisor]
    start = time.perf_counter()
    subprocess.run([*SHOAL, "down", str(app)], env=clean_env(), capture_output=True, check=True)
    while any(pid_alive(pid) for pid in pids):
        time.sleep(0.005)
    return up_s, time.perf_counter() - start


def uvicorn_cmd(target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--log-level", "warning"]  # fmt: skip


def bare_up_down(app: Path, targets: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    procs = []
    ports = []
    for target in targets:
        port = free_port()
        ports.append(port)
        procs.append(subprocess.Popen(uvicorn_cmd(target, port), cwd=app, env=clean_env()))
    with httpx.Client(trust_env=False) as http:
        for port in ports:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    http.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                    break
                time.sleep(0.01)
    up_s = time.perf_counter() - start
    start = time.perf_counter()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()
    return up_s, time.perf_counter() - start


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory(app: Path, target: str, service: str) -> tuple[float, float]:
    """RSS of one instance under `shoal serve` (with the app's NATS) and under bare uvicorn."""
    up = subprocess.run([*SHOAL, "up", str(app), "--detach"], env=clean_env(),
                        capture_output=True, text=True, check=False)  # fmt: skip
    if up.returncode != 0:
        raise SystemExit(f"shoal up failed:\n{up.stdout}{up.stderr}")
    try:
        rows = ps_rows(app)
        row = next(r for r in rows if r["service"] == service)
        with httpx.Client(trust_env=False) as http:
            http.get(f"http://{row['address']}/")
        time.sleep(0.5)
        meshed = rss_mb(row["pid"])
    finally:
        subprocess.run(
            [*SHOAL, "down", str(app)], env=clean_env(), capture_output=True, check=False
        )
    port = free_port()
    proc = subprocess.Popen(uvicorn_cmd(target, port), cwd=app, env=clean_env())
    try:
        with httpx.Client(trust_env=False) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    http.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                    break
                time.sleep(0.01)
        time.sleep(0.5)
        bare = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    return meshed, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", type=Path, default=ROOT / "examples" / "shop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--service", default="catalog")
    args = parser.parse_args()
    app = copy_app(args.app)
    manifest = load_manifest(app)
    targets = [s.asgi for s in manifest.services.values() for _ in range(s.replicas) if s.asgi]
    n = manifest.instances_total + (1 if manifest.gateway else 0)
    shoal_runs = [shoal_up_down(app) for _ in range(args.rounds)]
    bare_runs = [bare_up_down(app, targets) for _ in range(args.rounds)]
    up = statistics.median(r[0] for r in shoal_runs)
    down = statistics.median(r[1] for r in shoal_runs)
    bare_up = statistics.median(r[0] for r in bare_runs)
    bare_down = statistics.median(r[1] for r in bare_runs)
    spec = manifest.services[args.service]
    meshed, bare = memory(app, str(spec.asgi), args.service)
    print(f"{manifest.app}: {n} processes under shoal (with gateway), {len(targets)} bare")
    print(f"up    shoal {up:.2f} s (goal <= 3 s) | bare uvicorn {bare_up:.2f} s")
    print(f"down  shoal {down:.2f} s (goal <= 2 s) | bare uvicorn {bare_down:.2f} s")
    print(f"rss   {args.service} under shoal serve {meshed:.1f} MB | bare uvicorn {bare:.1f} MB "
          f"| +{meshed - bare:.1f} MB (goal <= +15 MB)")  # fmt: skip
    print(f"RESULT startup_up {up:.3f} s baseline={bare_up:.3f} ratio={up / bare_up:.3f}")
    print(f"RESULT startup_down {down:.3f} s baseline={bare_down:.3f} ratio={down / bare_down:.3f}")
    print(f"RESULT instance_rss {meshed:.1f} MB baseline={bare:.1f} ratio={meshed / bare:.3f}")
    shutil.rmtree(app.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
