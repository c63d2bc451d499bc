"""Security under `shoal up`: mTLS on every hop, renewal and root rotation under load with zero
failed requests, plaintext refused, authorization policies end to end (applied live), and no
secret in any process's argv or environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import APPS, SHOAL

pytestmark = pytest.mark.integration

RELAY = '''\
"""Calls echo through the mesh: GET /<path> -> http://echo/<path>."""
import shoal

_client = None


async def app(scope, receive, send):
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _client = shoal.client()
                await send({"type": "lifespan.startup.complete"})
            else:
                await _client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    response = await _client.get("http://echo" + scope["path"])
    headers = [(b"content-length", str(len(response.content)).encode())]
    reason = response.headers.get("shoal-reason")
    if reason:
        headers.append((b"shoal-reason", reason.encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
'''

MANIFEST = """\
app: sectest
services:
  echo:
    asgi: echo:app
    replicas: 2
  relay:
    asgi: relay:app
  files:
    command: ["{python}", "-m", "http.server", "$PORT", "--bind", "127.0.0.1"]
gateway:
  port: {port}
  routes:
    - {{prefix: /, service: relay}}
"""

POLICIES = """\
policies:
  - name: relay-reads-echo
    target: echo
    from: [relay]
    methods: [GET]
    paths: [/public]
  - name: no-secrets
    target: files
    action: deny
    paths: [/secret]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shoal(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@contextlib.contextmanager
def _up(app_dir: Path, env: dict[str, str]) -> Iterator[None]:
    result = _shoal("up", str(app_dir), "--detach", env=env)
    pids: set[int] = set()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield
    finally:
        control = app_dir / ".shoal" / "control.json"
        if control.exists():
            pids.add(json.loads(control.read_text())["pid"])
            ps = _shoal("ps", str(app_dir), "--json", env=env)
            with contextlib.suppress(ValueError):
                pids |= {r["pid"] for r in json.loads(ps.stdout) if r["pid"]}
            _shoal("down", str(app_dir), env=env)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def app(tmp_path: Path) -> tuple[Path, dict[str, str], int]:
    port = _free_port()
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    (tmp_path / "relay.py").write_text(RELAY)
    (tmp_path / "shoal.yaml").write_text(MANIFEST.format(port=port, python=sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return tmp_path, env, port


def _ps(app_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = _shoal("ps", str(app_dir), "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


async def _load(url: str, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Constant load: a new request as soon as the last answered (plus a few new connections)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            try:
                response = await client.get(url)
                counts[str(response.status_code)] += 1
                if response.status_code != 200:
                    counts["reason " + response.headers.get("shoal-reason", "?")] += 1
            except httpx.HTTPError as exc:
                counts[type(exc).__name__] += 1


def test_renewal_and_root_rotation_under_load_fail_no_request(
    app: tuple[Path, dict[str, str], int],
) -> None:
    app_dir, env, port = app
    env["SHOAL_SVID_LIFETIME"] = "12"  # renewed every ~6 s
    with _up(app_dir, env):
        counts: Counter[str] = Counter()

        async def scenario() -> dict[str, Any]:
            stop = asyncio.Event()
            url = f"http://127.0.0.1:{port}/x"
            load = [asyncio.create_task(_load(url, stop, counts)) for _ in range(4)]
            await asyncio.sleep(8.0)  # at least one renewal of every SVID under load
            rotate = await asyncio.to_thread(
                _shoal, "ca", "rotate", str(app_dir), "--json", env=env
            )
            assert rotate.returncode == 0, rotate.stderr
            await asyncio.sleep(7.0)  # and a renewal from the new intermediate
            stop.set()
            await asyncio.gather(*load)
            result: dict[str, Any] = json.loads(rotate.stdout)
            return result

        rotated = asyncio.run(scenario())
        show = _shoal("ca", "show", str(app_dir), "--json", env=env)
        status = json.loads(show.stdout)
        logs = (app_dir / ".shoal" / "logs").glob("*.log")
        text = "\n".join(p.read_text(errors="replace") for p in logs)

    assert counts["200"] > 200, counts
    assert set(counts) == {"200"}, counts  # zero failed requests
    assert rotated["old_root"] != rotated["new_root"]
    assert [s["step"] for s in rotated["steps"]] == [
        "trust both roots",
        "re-issue every SVID",
        "drop the old root",
    ]
    roots = [c for c in status["certificates"] if c["role"] == "root"]
    assert [r["fingerprint"] for r in roots] == [rotated["new_root"]]
    assert text.count("renewed the certificate") >= 8  # 4 instances, twice each at least
    assert "refused a connection" not in text
    # the root CA on disk is the new one, private
    ca_dir = app_dir / ".shoal" / "ca"
    assert (ca_dir.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in ca_dir.iterdir())


def test_plaintext_is_refused_and_policies_apply_live(
    app: tuple[Path, dict[str, str], int],
) -> None:
    app_dir, env, port = app
    with _up(app_dir, env):
        rows = _ps(app_dir, env)
        echo = next(r for r in rows if r["service"] == "echo")

        # A plaintext request straight to a service port gets no answer, and is logged;
        # a command service's registered port is its sidecar's, mTLS too.
        files = next(r for r in rows if r["service"] == "files")
        for address in (echo["address"], files["address"]):
            host, _, service_port = address.rpartition(":")
            with socket.create_connection((host, int(service_port)), timeout=5) as sock:
                sock.sendall(b"GET /public HTTP/1.1\r\nhost: echo\r\n\r\n")
                sock.settimeout(5)
                assert sock.recv(4096) == b""
        # Through the mesh (gateway -> relay -> echo) it works, over mTLS.
        assert httpx.get(f"http://127.0.0.1:{port}/public", timeout=10).status_code == 200

        # Only relay may GET /public on echo: the operator's own identity is denied.
        manifest = app_dir / "shoal.yaml"
        manifest.write_text(manifest.read_text() + POLICIES)
        applied = _shoal("apply", str(app_dir), env=env)
        assert applied.returncode == 0, applied.stderr

        def through_gateway(path: str) -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)

        deadline = time.monotonic() + 10
        while through_gateway("/private").status_code != 403 and time.monotonic() < deadline:
            time.sleep(0.1)
        private = through_gateway("/private")
        assert private.status_code == 403
        assert private.headers["shoal-reason"] == "denied:no-allow-match"
        assert through_gateway("/public").status_code == 200
        assert through_gateway("/public/more").status_code == 200
        assert through_gateway("/%70ublic/../private").status_code == 403

        call = _shoal("call", "echo", "/public", "-C", str(app_dir), env=env)
        assert "403" in call.stdout + call.stderr, call.stdout + call.stderr
        # The command service, behind its sidecar: served over mTLS, and policies apply.
        listing = _shoal("call", "files", "/", "-C", str(app_dir), env=env)
        assert "200 OK" in listing.stdout, listing.stdout + listing.stderr
        assert "echo.py" in listing.stdout
        secret = _shoal("call", "files", "/secret/../secret/x", "-C", str(app_dir), env=env)
        assert "403" in secret.stdout + secret.stderr, secret.stdout + secret.stderr
        assert "denied:no-secrets" in secret.stdout + secret.stderr

        # No secret in any process's argv or environment.
        info = json.loads((app_dir / ".shoal" / "nats.creds.json").read_text())
        pids = [r["pid"] for r in _ps(app_dir, env) if r["pid"]]
        pids.append(json.loads((app_dir / ".shoal" / "control.json").read_text())["pid"])
        for pid in pids:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert info["password"].encode() not in cmdline + environ, pid
            assert b"PRIVATE KEY" not in environ
        logs = "\n".join(
            p.read_text(errors="replace") for p in (app_dir / ".shoal" / "logs").glob("*.log")
        )
        assert info["password"] not in logs
        assert "refused a connection" in logs
        assert "plaintext" in logs
        assert "denied:no-allow-match" in logs


def test_check_warns_and_fails_on_ca_expiry(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from shoal.control._ca import CertificateAuthority, check_expiry

    (tmp_path / "shoal.yaml").write_text(
        f"app: checks\nservices:\n  echo:\n    command: ['{sys.executable}', '-c', 'pass']\n"
    )
    CertificateAuthority.load_or_create(tmp_path, "checks")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    result = _shoal("check", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    soon = datetime.now(UTC) + timedelta(days=350)
    assert [level for level, _ in check_expiry(tmp_path, now=soon)] == ["warning"]
    later = datetime.now(UTC) + timedelta(days=400)
    assert [level for level, _ in check_expiry(tmp_path, now=later)] == ["error"]
    result = _shoal("check", str(tmp_path), "--warn-days", "400", env=env)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr


def test_a_service_nats_user_can_touch_only_its_own_registry_entries(
    app: tuple[Path, dict[str, str], int],
) -> None:
    import nats
    import nats.errors

    app_dir, env, port = app
    with _up(app_dir, env):
        creds = json.loads((app_dir / ".shoal" / "nats.creds.json").read_text())
        conn = json.loads((app_dir / ".shoal" / "nats.json").read_text())
        address = conn["display_url"].removeprefix("nats://")
        errors: list[str] = []

        async def attempt() -> dict[str, Any]:
            async def on_error(exc: Exception) -> None:
                errors.append(str(exc))

            nc = await nats.connect(
                f"nats://svc-echo:{creds['services']['echo']}@{address}",
                error_cb=on_error,
                inbox_prefix="_INBOX_echo",
            )
            js = nc.jetstream(timeout=1.0)
            outcome: dict[str, Any] = {}
            registry = await js.key_value("shoal-registry-sectest")
            relay_before = {k: (await registry.get(k)).value for k in await registry.keys()}
            for name, call in (
                ("hijack relay", registry.put("relay.relay-1", b'{"evil": true}')),
                ("delete relay", registry.delete("relay.relay-1")),
                ("own entry", registry.put("echo.probe", b"{}")),
            ):
                try:
                    await call
                    outcome[name] = "ok"
                except (nats.errors.Error, TimeoutError) as exc:
                    outcome[name] = type(exc).__name__
            with contextlib.suppress(Exception):
                await registry.delete("echo.probe")
            policy = await js.key_value("shoal-policy-sectest")
            try:
                await policy.put("echo", b"{}")
                outcome["policy"] = "ok"
            except (nats.errors.Error, TimeoutError) as exc:
                outcome["policy"] = type(exc).__name__
            try:
                await nc.request("shoal.sectest.ca.issue", b"{}", timeout=1.0)
                outcome["issue"] = "ok"
            except (nats.errors.Error, TimeoutError) as exc:
                outcome["issue"] = type(exc).__name__
            for inbox in ("_INBOX.>", "_INBOX_relay.>"):  # nobody else's replies
                await nc.subscribe(inbox)
            await nc.flush()
            await asyncio.sleep(0.3)
            relay_after = {k: (await registry.get(k)).value for k in await registry.keys()}
            outcome["relay unchanged"] = {
                k: v for k, v in relay_before.items() if k.startswith("relay.")
            } == {k: v for k, v in relay_after.items() if k.startswith("relay.")}
            await nc.close()
            return outcome

        outcome = asyncio.run(attempt())
        # and the app still answers through relay, whose entry nobody could touch
        assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=10).status_code == 200

    assert outcome["own entry"] == "ok"
    for name in ("hijack relay", "delete relay", "policy", "issue"):
        assert outcome[name] != "ok", outcome
    assert outcome["relay unchanged"] is True
    assert any("permissions violation" in e.lower() for e in errors), errors
    for inbox in ("_INBOX.>", "_INBOX_relay.>"):
        assert any(f'subscription to "{inbox.lower()}"' in e.lower() for e in errors), errors


def test_the_gateway_serves_tls_outward_with_a_dev_or_a_given_certificate(
    app: tuple[Path, dict[str, str], int],
) -> None:
    import ssl

    from shoal.control._devcert import dev_certificate

    app_dir, env, port = app
    manifest = app_dir / "shoal.yaml"
    plain = manifest.read_text()
    manifest.write_text(plain.replace("gateway:\n", "gateway:\n  tls: dev\n"))
    with _up(app_dir, env):
        cert = app_dir / ".shoal" / "gateway-tls" / "cert.pem"
        assert (cert.parent / "key.pem").stat().st_mode & 0o777 == 0o600
        trust = ssl.create_default_context(cafile=str(cert))
        good = httpx.get(f"https://localhost:{port}/x", verify=trust, timeout=10)
        assert good.status_code == 200
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port
            httpx.get(f"http://127.0.0.1:{port}/x", timeout=5)
        with pytest.raises(httpx.ConnectError):  # not trusted without the dev certificate
            httpx.get(f"https://localhost:{port}/x", timeout=5)
        # the gateway's admin details are not for the outside
        info = httpx.get(f"https://localhost:{port}/.shoal/info", verify=trust, timeout=10)
        assert info.status_code == 404

    # A user-given certificate (here: one made like the dev one, at other paths).
    given_cert, given_key = dev_certificate(app_dir / "given", "sectest")
    manifest.write_text(
        plain.replace("gateway:\n", f"gateway:\n  tls: {{cert: {given_cert}, key: {given_key}}}\n")
    )
    with _up(app_dir, env):
        context = ssl.create_default_context(cafile=str(given_cert))
        answer = httpx.get(f"https://localhost:{port}/x", verify=context, timeout=10)
        assert answer.status_code == 200

    manifest.write_text(
        plain.replace("gateway:\n", "gateway:\n  tls: {cert: missing.pem, key: missing.key}\n")
    )
    result = _shoal("up", str(app_dir), "--detach", env=env)
    assert result.returncode == 1
    assert "gateway.tls.cert: cannot read" in result.stderr
    assert "Traceback" not in result.stderr
