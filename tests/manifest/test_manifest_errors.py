"""Every kind of bad manifest is reported as exact ``PATH:LINE:COL: field: message`` lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shoal.exceptions import ManifestError
from shoal.manifest import load_manifest


def problems_in(text: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Write ``text`` as ``directory/shoal.yaml``, load it from there, return the lines."""
    (directory / "shoal.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.chdir(directory)
    with pytest.raises(ManifestError) as caught:
        load_manifest(".")
    lines = [str(problem) for problem in caught.value.problems]
    assert str(caught.value) == "\n".join(lines)
    return lines


CASES = [
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
          orders:
            asgi: orders.main:app
            replcas: 2
        """,
        ["shoal.yaml:7:5: services.orders.replcas: unknown key (did you mean 'replicas'?)"],
        id="unknown-key-with-suggestion",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            colour: blue
        """,
        [
            "shoal.yaml:5:5: services.orders.colour: unknown key (valid keys: asgi, command, "
            "config, env, limits, outlier, port, replicas, retries, routes, service, state, "
            "timeout, traffic, version)"
        ],
        id="unknown-key-without-close-match",
    ),
    pytest.param(
        """\
        app: shop
        servics:
          orders: {asgi: orders.main:app}
        """,
        [
            "shoal.yaml:1:1: services: required key is missing",
            "shoal.yaml:2:1: servics: unknown key (did you mean 'services'?)",
        ],
        id="unknown-top-level-key-and-missing-services",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders: {asgi: orders.main:app
        """,
        [
            "shoal.yaml:4:1: YAML syntax error: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping at line 3, column 11)"
        ],
        id="yaml-syntax-error-unclosed-brace",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders: asgi: orders.main:app
        """,
        ["shoal.yaml:3:15: YAML syntax error: mapping values are not allowed here"],
        id="yaml-syntax-error-same-line",
    ),
    pytest.param(
        "app: shop\nservices:\n\torders: {asgi: orders.main:app}\n",
        [
            "shoal.yaml:3:1: YAML syntax error: found character '\\t' that cannot start any "
            "token (indent with spaces, not tabs)"
        ],
        id="yaml-syntax-error-tab",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            replicas: two
        """,
        ["shoal.yaml:5:15: services.orders.replicas: expected an integer, got 'two'"],
        id="wrong-type-replicas",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            version: 1.10
        """,
        [
            "shoal.yaml:5:14: services.orders.version: expected a string, got 1.1 "
            '(put it in quotes: "1.1")'
        ],
        id="wrong-type-version-number",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            command: [python, -m, orders]
        """,
        ["shoal.yaml:3:3: services.orders: set either 'asgi' or 'command', not both"],
        id="both-asgi-and-command",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            replicas: 2
        """,
        [
            "shoal.yaml:3:3: services.orders: needs 'asgi' (the import path of an ASGI app, "
            "e.g. 'orders.main:app') or 'command' (a program to run, "
            'e.g. ["node", "server.js"])'
        ],
        id="neither-asgi-nor-command",
    ),
    pytest.param(
        """\
        app: shop
        services:
          Orders_Svc:
            asgi: orders.main:app
        """,
        [
            "shoal.yaml:3:3: services.Orders_Svc: not a valid service name: use lowercase "
            "letters, digits and '-', starting and ending with a letter or digit, "
            "at most 63 characters (try 'orders-svc')"
        ],
        id="bad-service-name",
    ),
    pytest.param(
        """\
        app: My Shop
        services:
          orders: {asgi: orders.main:app}
        """,
        [
            "shoal.yaml:1:6: app: not a valid app name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters (try 'my-shop')"
        ],
        id="bad-app-name",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            replicas: 65
          catalog: {asgi: catalog.main:app, replicas: -1}
        """,
        [
            "shoal.yaml:5:15: services.orders.replicas: must be between 0 and 64, got 65",
            "shoal.yaml:6:47: services.catalog.replicas: must be between 0 and 64, got -1",
        ],
        id="replicas-out-of-range",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            port: 9000
        """,
        [
            "shoal.yaml:5:5: services.orders.port: port applies only to command services "
            "(asgi services get a free port)"
        ],
        id="port-on-asgi-service",
    ),
    pytest.param(
        """\
        app: shop
        services:
          billing:
            command: "node 'server.js"
            port: 70000
          batch:
            command: []
        """,
        [
            "shoal.yaml:4:14: services.billing.command: cannot split the command into words: "
            "No closing quotation",
            "shoal.yaml:5:11: services.billing.port: must be between 1 and 65535, got 70000",
            'shoal.yaml:7:14: services.batch.command: must name the program to run, e.g. ["node", '
            '"server.js"]',
        ],
        id="bad-command-and-port",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders
          catalog:
            asgi: catalog/main.py:app
        """,
        [
            "shoal.yaml:4:11: services.orders.asgi: expected an import path "
            "'package.module:attribute' (e.g. 'catalog.main:app'), got 'orders' "
            "(add ':app' or the name of the ASGI object)",
            "shoal.yaml:6:11: services.catalog.asgi: expected an import path "
            "'package.module:attribute' (e.g. 'catalog.main:app'), got 'catalog/main.py:app'",
        ],
        id="bad-import-path",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            env:
              LOG_LEVEL: [info]
              2FA: on
        """,
        [
            "shoal.yaml:6:18: services.catalog.env.LOG_LEVEL: expected a string, got a list",
            "shoal.yaml:7:7: services.catalog.env.2FA: not a valid environment variable name: "
            "use letters, digits and '_', not starting with a digit",
        ],
        id="bad-env",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
          billing-svc:
            command: [node, server.js]
        gateway:
          routes:
            - {prefix: /api/billing, service: billing}
        """,
        [
            "shoal.yaml:9:39: gateway.routes[0].service: unknown service 'billing' "
            "(did you mean 'billing-svc'?)"
        ],
        id="route-to-unknown-service-with-suggestion",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
        gateway:
          routes:
            - {prefix: /api/catalog, service: catalog}
            - prefix: /api/payments
              service: payments
        """,
        [
            "shoal.yaml:9:16: gateway.routes[1].service: unknown service 'payments' "
            "(services: catalog)"
        ],
        id="route-to-unknown-service-listing-services",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
        gateway:
          port: 0
          routes:
            - {prefix: /api/catalog, service: catalog}
            - {prefix: api/orders, service: catalog, strip_prefix: yes}
            - {service: catalog}
        """,
        [
            "shoal.yaml:6:9: gateway.port: must be between 1 and 65535, got 0",
            "shoal.yaml:9:16: gateway.routes[1].prefix: must start with '/', got 'api/orders' "
            "(try '/api/orders')",
            "shoal.yaml:9:60: gateway.routes[1].strip_prefix: expected true or false, got 'yes'",
            "shoal.yaml:10:7: gateway.routes[2].prefix: required key is missing",
        ],
        id="bad-gateway",
    ),
    pytest.param(
        "",
        ["shoal.yaml:1:1: the manifest is empty (it needs at least 'app' and 'services')"],
        id="empty-file",
    ),
    pytest.param(
        "# nothing here yet\n",
        ["shoal.yaml:1:1: the manifest is empty (it needs at least 'app' and 'services')"],
        id="comments-only",
    ),
    pytest.param(
        "# the services\n- catalog\n- orders\n",
        [
            "shoal.yaml:2:1: the manifest must be a mapping of keys (app:, services:, gateway:), "
            "got a list"
        ],
        id="top-level-list",
    ),
    pytest.param(
        "shop\n",
        [
            "shoal.yaml:1:1: the manifest must be a mapping of keys (app:, services:, gateway:), "
            "got 'shop'"
        ],
        id="top-level-scalar",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders: {asgi: orders.main:app}
          catalog: {asgi: catalog.main:app}
          orders: {asgi: orders.v2:app}
        app: shop2
        """,
        [
            "shoal.yaml:5:3: services.orders: duplicate key (first defined at line 3)",
            "shoal.yaml:6:1: app: duplicate key (first defined at line 1)",
        ],
        id="duplicate-keys",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: !python/name:orders.main.app
        """,
        [
            "shoal.yaml:4:11: services.orders.asgi: "
            "unsupported YAML tag '!python/name:orders.main.app'"
        ],
        id="unsupported-tag",
    ),
    pytest.param(
        """\
        app: shop
        services:
        """,
        ["shoal.yaml:2:1: services: expected a mapping (key: value lines), got an empty value"],
        id="services-empty-value",
    ),
    pytest.param(
        """\
        app: shop
        services: {}
        """,
        ["shoal.yaml:2:1: services: needs at least one service"],
        id="services-empty-mapping",
    ),
    pytest.param(
        """\
        app: shop
        services:
          orders:
            asgi: orders.main:app
            replicas: 1
          catalog:
            replicas: lots
            command: [python, -m, catalog]
            command_args: [--fast]
        gateway:
          routes:
            - {prefix: /orders, service: order}
        """,
        [
            "shoal.yaml:7:15: services.catalog.replicas: expected an integer, got 'lots'",
            "shoal.yaml:9:5: services.catalog.command_args: unknown key (did you mean 'command'?)",
            "shoal.yaml:12:34: gateway.routes[0].service: unknown service 'order' "
            "(did you mean 'orders'?)",
        ],
        id="every-problem-in-file-order",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_manifest_is_reported_line_by_line(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert problems_in(text, tmp_path, monkeypatch) == expected


def test_no_message_leaks_pydantic_wording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for param in CASES:
        text = param.values[0]
        assert isinstance(text, str)
        for line in problems_in(text, tmp_path, monkeypatch):
            assert "Input should" not in line
            assert "pydantic" not in line
            assert "http" not in line


def test_problem_path_reads_as_the_user_typed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = tmp_path / "examples" / "shop"
    app_dir.mkdir(parents=True)
    (app_dir / "shoal.yaml").write_text("app: shop\nservices:\n  orders:\n    replicas: 2\n")
    monkeypatch.chdir(tmp_path)
    for given in ("examples/shop", "examples/shop/", "examples/shop/shoal.yaml"):
        with pytest.raises(ManifestError) as caught:
            load_manifest(given)
        [problem] = caught.value.problems
        assert str(problem).startswith("examples/shop/shoal.yaml:3:3: services.orders: needs ")
    with pytest.raises(ManifestError) as caught:
        load_manifest(app_dir)
    assert str(caught.value).startswith(f"{app_dir}/shoal.yaml:3:3: services.orders: ")


def test_missing_file_in_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shop").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as caught:
        load_manifest("shop")
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (0, 0)
    assert str(problem) == (
        "shop/shoal.yaml: no such file (create shoal.yaml here, "
        "or point at the directory that holds the app's shoal.yaml)"
    )


def test_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for given in ("shpo", "shop.yaml"):
        with pytest.raises(ManifestError) as caught:
            load_manifest(given)
        assert [str(p) for p in caught.value.problems] == [f"{given}: no such file or directory"]


def test_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(b"app: \xff\xfe\n")
    (tmp_path / "odd" / "shoal.yaml").mkdir(parents=True)
    (tmp_path / "bell.yaml").write_text("app: \x07\n")
    (tmp_path / "date.yaml").write_text("app: shop\nreleased: 2024-02-30\n")
    expected = {
        "binary.yaml": "binary.yaml: cannot read: not UTF-8 text (byte 5)",
        "odd": "odd/shoal.yaml: is a directory, not a manifest file",
        "bell.yaml": "bell.yaml:1:6: YAML syntax error: unacceptable character #x0007: "
        "special characters are not allowed",
        "date.yaml": "date.yaml: YAML error: day is out of range for month",
    }
    for given, line in expected.items():
        with pytest.raises(ManifestError) as caught:
            load_manifest(given)
        assert [str(p) for p in caught.value.problems] == [line]
