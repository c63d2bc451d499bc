"""Path normalisation for authorization rules: no spelling of /admin slips past a deny on it."""

from __future__ import annotations

import pytest

from shoal.mesh._paths import (
    PathRejectedError,
    encode_path,
    normalize_path,
    normalize_raw_path,
    path_matches_prefix,
)

REJECT = None
"""Expected result for a path that must be refused with 400 rather than normalised."""

# Each is an attack on a rule denying /admin: it must come out under /admin (so the deny
# catches it) or be refused. `None` means refused.
ADMIN_CORPUS: list[tuple[bytes, str | None]] = [
    # the plain spellings
    (b"/admin", "/admin"),
    (b"/admin/", "/admin/"),
    (b"/admin/x", "/admin/x"),
    # percent-encoded unreserved characters are decoded once
    (b"/%61dmin", "/admin"),
    (b"/adm%69n", "/admin"),
    (b"/%61%64%6d%69%6e", "/admin"),
    (b"/%61%64%6D%69%6E/x", "/admin/x"),
    # dot segments, plain and encoded; `..` clamps at the root
    (b"/./admin", "/admin"),
    (b"/admin/.", "/admin/"),
    (b"/admin/./x", "/admin/x"),
    (b"/x/../admin", "/admin"),
    (b"/x/y/../../admin", "/admin"),
    (b"/../admin", "/admin"),
    (b"/../../../admin", "/admin"),
    (b"/admin/x/..", "/admin/"),
    (b"/admin/x/../", "/admin/"),
    (b"/./../admin/./", "/admin/"),
    (b"/x/%2e%2e/admin", "/admin"),
    (b"/x/%2E%2E/admin", "/admin"),
    (b"/x/.%2e/admin", "/admin"),
    (b"/x/%2e./admin", "/admin"),
    (b"/%2e/admin", "/admin"),
    # repeated slashes merge
    (b"//admin", "/admin"),
    (b"///admin//x", "/admin/x"),
    (b"/x//..//admin", "/admin"),
    # Tomcat-style ;params are stripped from each segment before decoding
    (b"/admin;x", "/admin"),
    (b"/admin;x=1/sub", "/admin/sub"),
    (b"/admin;/x", "/admin/x"),
    (b"/x/..;/admin", "/admin"),
    (b"/;x/admin", "/admin"),
    (b"/x;a=b/..;c=d/admin", "/admin"),
    (b"/admin.;x/", "/admin/"),
    # Windows-style trailing dots and spaces
    (b"/admin.", "/admin"),
    (b"/admin..", "/admin"),
    (b"/admin%2e", "/admin"),
    (b"/admin%20", "/admin"),
    (b"/admin.%20/x", "/admin/x"),
    (b"/x/.../admin", REJECT),
    (b"/admin/..../", REJECT),
    (b"/x/..%20/admin", REJECT),
    # encoded slashes and backslashes change the segments: refused
    (b"/x/..%2fadmin", REJECT),
    (b"/x/..%2Fadmin", REJECT),
    (b"/admin%2f", REJECT),
    (b"/admin%2F..", REJECT),
    (b"/admin/%2e%2e%2f", REJECT),
    (b"/admin%5c", REJECT),
    (b"/x/..%5cadmin", REJECT),
    (b"/admin\\", REJECT),
    (b"/\\admin", REJECT),
    (b"/x/..\\admin", REJECT),
    # double encoding: decoded once, and a second escape left behind is refused
    (b"/%2561dmin", REJECT),
    (b"/%252e%252e/admin", REJECT),
    (b"/x/%252e%252e/admin", REJECT),
    (b"/%25%36%31dmin", REJECT),
    (b"/x/%25%32%65%25%32%65/admin", REJECT),
    # control characters, raw or encoded (C1 too)
    (b"/admin%00", REJECT),
    (b"/admin%00/x", REJECT),
    (b"/admin\x00", REJECT),
    (b"/admin%09", REJECT),
    (b"/admin\t", REJECT),
    (b"/admin%0a", REJECT),
    (b"/admin%0D%0A", REJECT),
    (b"/admin%7f", REJECT),
    (b"/admin%c2%85", REJECT),
    # invalid escapes
    (b"/admin%", REJECT),
    (b"/admin%4", REJECT),
    (b"/%zzadmin", REJECT),
    (b"/%6", REJECT),
    # not UTF-8 once decoded: overlong '.' (IIS Unicode traversal), stray bytes, surrogates
    (b"/%c0%ae%c0%ae/admin", REJECT),
    (b"/x/%c0%ae%c0%ae/admin", REJECT),
    (b"/%ff/../admin", REJECT),
    (b"/%ed%a0%80/../admin", REJECT),
    # not a bare path
    (b"/admin?x", REJECT),
    (b"/admin#x", REJECT),
    (b"admin", REJECT),
    (b"", REJECT),
    (b"%2fadmin", REJECT),
]

# Well-formed paths: they come out as they went in (decoded where they were encoded).
UNCHANGED: list[tuple[str, str]] = [
    ("/", "/"),
    ("/items/42", "/items/42"),
    ("/a-b_c.d~e", "/a-b_c.d~e"),
    ("/caf%C3%A9", "/café"),
    ("/café", "/café"),
    ("/items/", "/items/"),
    ("/v1/users/7/orders/", "/v1/users/7/orders/"),
    ("/a:b@c/!$&'()*+,=", "/a:b@c/!$&'()*+,="),
    ("/files/report.v2.pdf", "/files/report.v2.pdf"),
    ("/.well-known/acme-challenge/token", "/.well-known/acme-challenge/token"),
    ("/100%25", "/100%"),
    ("/a%20b", "/a b"),
    ("/q%3Fx", "/q?x"),
    ("/Admin-Panel/Users", "/Admin-Panel/Users"),
]

# Spellings near /admin that come out as other paths. The deny rule does not catch them,
# and that is right: the app is handed the same normalised path, and a router matching
# literally (Starlette) does not route any of them to /admin either.
NEIGHBOURS: list[tuple[bytes, str]] = [
    # An encoded ';' is data, not a parameter delimiter (parameters are stripped from the
    # raw path before decoding), so this is the literal segment "admin;x", and
    # encode_path hands it on as %3B so no later parser strips it either.
    (b"/admin%3bx", "/admin;x"),
    (b"/admin%3B", "/admin;"),
    # Rules are case-sensitive by default (see the case_sensitive test below).
    (b"/ADMIN", "/ADMIN"),
    (b"/Admin/x", "/Admin/x"),
    # No NFKC folding: a fullwidth letter is a different path to a literal router too.
    ("/\uff41dmin".encode(), "/\uff41dmin"),
    (b"/%EF%BD%81dmin", "/\uff41dmin"),
    (b"/admin%E2%80%8B", "/admin\u200b"),
    # Segment boundaries: a prefix is not a substring.
    (b"/administrator", "/administrator"),
    (b"/admin-panel", "/admin-panel"),
    (b"/x/admin", "/x/admin"),
    (b"/%25zzadmin", "/%zzadmin"),
]


def _ids(cases: list[tuple[bytes, str | None]] | list[tuple[bytes, str]]) -> list[str]:
    return [raw.decode("ascii", "backslashreplace") or "<empty>" for raw, _ in cases]


def test_admin_corpus_is_large_enough() -> None:
    assert len(ADMIN_CORPUS) >= 45
    assert len({raw for raw, _ in ADMIN_CORPUS}) == len(ADMIN_CORPUS)


@pytest.mark.parametrize(("raw", "expected"), ADMIN_CORPUS, ids=_ids(ADMIN_CORPUS))
def test_every_spelling_of_admin_is_denied_or_rejected(raw: bytes, expected: str | None) -> None:
    if expected is REJECT:
        with pytest.raises(PathRejectedError):
            normalize_raw_path(raw)
        return
    path = normalize_raw_path(raw)
    assert path == expected
    assert path_matches_prefix(path, "/admin")


@pytest.mark.parametrize(("raw", "expected"), UNCHANGED)
def test_well_formed_paths_come_out_unchanged(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert normalize_raw_path(raw.encode()) == expected


@pytest.mark.parametrize(("raw", "expected"), NEIGHBOURS, ids=_ids(NEIGHBOURS))
def test_neighbours_of_admin_are_other_paths(raw: bytes, expected: str) -> None:
    path = normalize_raw_path(raw)
    assert path == expected
    assert not path_matches_prefix(path, "/admin")


@pytest.mark.parametrize(
    "path",
    [expected for _, expected in ADMIN_CORPUS if expected is not None]
    + [expected for _, expected in UNCHANGED + NEIGHBOURS],
)
def test_normalised_paths_are_a_fixed_point_through_encode_path(path: str) -> None:
    raw_path = encode_path(path)
    assert raw_path.isascii()
    assert normalize_raw_path(raw_path) == path


def test_encode_path_keeps_a_decoded_semicolon_literal() -> None:
    assert encode_path("/admin;x") == b"/admin%3Bx"
    assert encode_path("/café/100%") == b"/caf%C3%A9/100%25"


def test_case_insensitive_rules_catch_other_cases() -> None:
    assert not path_matches_prefix("/ADMIN", "/admin")
    assert path_matches_prefix("/ADMIN", "/admin", case_sensitive=False)
    assert path_matches_prefix("/Admin/Users", "/ADMIN", case_sensitive=False)
    assert not path_matches_prefix("/Administrator", "/admin", case_sensitive=False)


@pytest.mark.parametrize(
    ("path", "prefix", "matches"),
    [
        ("/admin", "/admin", True),
        ("/admin/", "/admin", True),
        ("/admin/x/y", "/admin", True),
        ("/administrator", "/admin", False),
        ("/admi", "/admin", False),
        ("/", "/admin", False),
        ("/admin", "/admin/", True),
        ("/admin/x", "/admin/", True),
        ("/anything/at/all", "/", True),
        ("/", "/", True),
        ("/api/v1/users", "/api/v1", True),
        ("/api/v10", "/api/v1", False),
    ],
)
def test_prefixes_match_on_segment_boundaries(path: str, prefix: str, matches: bool) -> None:
    assert path_matches_prefix(path, prefix) is matches


def test_a_prefix_must_start_with_a_slash() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        path_matches_prefix("/admin", "admin")


def test_the_query_is_not_part_of_the_path() -> None:
    # raw_path never carries the query: the server splits it off into query_string.
    target = b"/admin?x=1"
    raw_path, _, _ = target.partition(b"?")
    assert path_matches_prefix(normalize_raw_path(raw_path), "/admin")


def test_a_rejection_says_what_was_wrong() -> None:
    with pytest.raises(PathRejectedError, match="encoded slash") as caught:
        normalize_raw_path(b"/x/..%2Fadmin")
    assert caught.value.path == "/x/..%2Fadmin"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(PathRejectedError, match="double percent-encoded"):
        normalize_raw_path(b"/%252e")
    with pytest.raises(PathRejectedError, match="does not start with '/'"):
        normalize_raw_path(b"admin")


def test_normalize_path_refuses_lone_surrogates() -> None:
    with pytest.raises(PathRejectedError, match="not valid Unicode"):
        normalize_path("/admin\udcff")
