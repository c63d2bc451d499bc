"""``gateway.tls``: ``dev`` or ``{cert, key}``; anything else is a problem where it is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_manifest_errors import problems_in

from shoal.manifest import load_manifest
from shoal.manifest._models import GatewayTlsSpec

HEAD = """\
app: shop
services:
  orders: {asgi: orders.main:app}
gateway:
  port: 8443
"""


def test_dev_and_given_certificates_load(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text(HEAD + "  tls: dev\n")
    gateway = load_manifest(tmp_path).gateway
    assert gateway is not None
    assert gateway.tls == GatewayTlsSpec(dev=True)
    (tmp_path / "shoal.yaml").write_text(HEAD + "  tls: {cert: tls/c.pem, key: tls/k.pem}\n")
    gateway = load_manifest(tmp_path).gateway
    assert gateway is not None
    assert gateway.tls == GatewayTlsSpec(cert="tls/c.pem", key="tls/k.pem")
    (tmp_path / "shoal.yaml").write_text(HEAD)
    gateway = load_manifest(tmp_path).gateway
    assert gateway is not None
    assert gateway.tls is None


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            "prod",
            "shoal.yaml:6:8: gateway.tls: expected `dev` (a development certificate for "
            "localhost) or {cert: FILE, key: FILE}, got 'prod'",
        ),
        (
            "{cert: c.pem}",
            "shoal.yaml:6:8: gateway.tls: `key` is missing: give both cert and key, "
            "or write `tls: dev`",
        ),
        ("{cert: c.pem, kee: k.pem}", "shoal.yaml:6:22: gateway.tls.kee: unknown key"),
        ("{cert: '', key: k.pem}", "shoal.yaml:6:15: gateway.tls.cert: a file path is required"),
    ],
)
def test_a_bad_tls_setting_is_a_problem_where_it_is_written(
    tls: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = problems_in(HEAD + f"  tls: {tls}\n", tmp_path, monkeypatch)
    assert any(line.startswith(expected) for line in lines), lines
