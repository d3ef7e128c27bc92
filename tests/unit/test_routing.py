"""Routing decisions: which rule owns a request, whether it is relayed, sent to the
origin or refused, how it maps onto a mirror, and when a failure moves on."""

from __future__ import annotations

import dataclasses

import pytest

from mirrorgate.rules import Prefix, parse_rules
from mirrorgate.routing import (
    RequestFacts,
    counts_against_mirror,
    header_problem,
    map_url,
    path_problem,
    route,
    should_fall_back,
    split_query,
)

RULES = parse_rules("""\
version: 1
profiles: {cn: China, direct: Origins only}
default_profile: cn
rules:
  - name: go-sumdb-via-proxy
    match: https://proxy.golang.org/sumdb/sum.golang.org/
    mirrors:
      cn: [https://goproxy.cn/sumdb/sum.golang.org/, https://sum.golang.google.cn/]
  - name: go-proxy
    match: https://proxy.golang.org/
    mirrors:
      cn: [https://goproxy.cn/, https://mirrors.aliyun.com/goproxy/]
  - name: pypi-simple
    match: https://pypi.org/simple/
    mirrors:
      cn: [https://pypi.tuna.tsinghua.edu.cn/simple/]
  - name: debian-http
    match: http://deb.debian.org/debian/
  - name: alt-port
    match: https://pkg.example:8443/repo/
  - name: npm
    match: https://registry.npmjs.org/
    mirrors:
      cn: [https://registry.npmmirror.com/, https://mirrors.huaweicloud.com/repository/npm/]
    origin_only: [/-/user/, /-/whoami, /-/v1/search]
    fallback_on: [connect_error, timeout, 5xx, 429, 404]
  - name: status-only
    match: https://status.example/
    fallback_on: [503, 4xx]
""", "rules/test.yaml")


def facts(url_path: str, *, host: str = "registry.npmjs.org", method: str = "GET", scheme: str = "https",
          port: int | None = None, creds: bool = False) -> RequestFacts:
    if port is None:
        port = 443 if scheme == "https" else 80
    return RequestFacts(method=method, scheme=scheme, host=host, port=port, path=url_path, has_credentials=creds)


def rule_named(name: str):
    return next(r for r in RULES.rules if r.name == name)


def routed(f: RequestFacts) -> tuple[str, str, str, str] | None:
    """(kind, rule name, prefix url, reason), or None."""
    r = route(RULES, f)
    return None if r is None else (r.kind, r.rule.name, r.prefix.url, r.reason)


# --------------------------------------------------------------------------------------
# Matching


@pytest.mark.parametrize("path, name, prefix", [
    ("/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.3.0", "go-sumdb-via-proxy",
     "https://proxy.golang.org/sumdb/sum.golang.org/"),
    ("/sumdb/sum.golang.org/supported", "go-sumdb-via-proxy", "https://proxy.golang.org/sumdb/sum.golang.org/"),
    ("/sumdb/sum.golang.org", "go-sumdb-via-proxy", "https://proxy.golang.org/sumdb/sum.golang.org/"),
    ("/sumdb/sum.golang.orgx/lookup", "go-proxy", "https://proxy.golang.org/"),
    ("/sumdb/other.example/lookup", "go-proxy", "https://proxy.golang.org/"),
    ("/golang.org/x/text/@v/list", "go-proxy", "https://proxy.golang.org/"),
    ("/", "go-proxy", "https://proxy.golang.org/"),
])
def test_longest_prefix_wins(path, name, prefix):
    assert routed(facts(path, host="proxy.golang.org")) == ("relay", name, prefix, "")


def test_rule_order_does_not_decide_longest_prefix():
    rs = parse_rules("""\
version: 1
profiles: {cn: x}
default_profile: cn
rules:
  - name: root
    match: https://h.example/
  - name: deep
    match: https://h.example/a/b/
  - name: mid
    match: https://h.example/a/
""", "rules/order.yaml")
    lookups = {p: rs.lookup("https", "h.example", 443, p) for p in ("/a/b/c", "/a/x", "/ab", "/")}
    assert {p: (r.name, pr.path) for p, (r, pr) in lookups.items()} == {
        "/a/b/c": ("deep", "/a/b"), "/a/x": ("mid", "/a"), "/ab": ("root", ""), "/": ("root", ""),
    }


@pytest.mark.parametrize("path, expected", [
    ("/simple", ("relay", "pypi-simple", "https://pypi.org/simple/", "")),
    ("/simple/", ("relay", "pypi-simple", "https://pypi.org/simple/", "")),
    ("/simple/requests/", ("relay", "pypi-simple", "https://pypi.org/simple/", "")),
    ("/simpleton", None),
    ("/simpleton/requests/", None),
    ("/simple-x/", None),
    ("/", None),
    ("", None),
])
def test_prefix_matches_on_segment_boundaries(path, expected):
    assert routed(facts(path, host="pypi.org")) == expected


@pytest.mark.parametrize("scheme, port, path, expected", [
    ("http", 80, "/debian/dists/bookworm/InRelease", "debian-http"),
    ("https", 443, "/debian/dists/bookworm/InRelease", None),
    ("http", 8080, "/debian/dists/bookworm/InRelease", None),
    ("https", 8443, "/repo/pkg", "alt-port"),
    ("https", 443, "/repo/pkg", None),
    ("http", 8443, "/repo/pkg", None),
])
def test_scheme_and_port_are_part_of_matching(scheme, port, path, expected):
    host = "deb.debian.org" if path.startswith("/debian") else "pkg.example"
    r = route(RULES, facts(path, host=host, scheme=scheme, port=port))
    assert (r.rule.name if r else None) == expected


@pytest.mark.parametrize("host", ["PyPI.org", "PYPI.ORG", "pypi.org"])
def test_host_matching_is_case_insensitive(host):
    assert routed(facts("/simple/x/", host=host)) == ("relay", "pypi-simple", "https://pypi.org/simple/", "")


def test_unknown_host_is_not_routed():
    assert route(RULES, facts("/simple/", host="test.pypi.org")) is None
    assert RULES.lookup("https", "example.com", 443, "/") is None


def test_query_does_not_affect_matching():
    assert routed(facts("/simpleton?x=/simple/", host="pypi.org")) is None
    assert routed(facts("/simple?page=2", host="pypi.org")) == (
        "relay", "pypi-simple", "https://pypi.org/simple/", "")
    assert routed(facts("/simple/requests/?a=1&b=/../..", host="pypi.org")) == (
        "relay", "pypi-simple", "https://pypi.org/simple/", "")


# --------------------------------------------------------------------------------------
# Route kinds


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_and_head_are_relayed(method):
    assert routed(facts("/left-pad", method=method)) == ("relay", "npm", "https://registry.npmjs.org/", "")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"])
def test_other_methods_go_to_origin(method):
    assert routed(facts("/left-pad", method=method)) == (
        "origin", "npm", "https://registry.npmjs.org/", f"method {method}")


def test_credentials_go_to_origin():
    assert routed(facts("/@myorg%2fprivate", creds=True)) == (
        "origin", "npm", "https://registry.npmjs.org/", "credentials")


def test_method_is_reported_before_credentials():
    assert routed(facts("/left-pad", method="PUT", creds=True)) == (
        "origin", "npm", "https://registry.npmjs.org/", "method PUT")


@pytest.mark.parametrize("path", [
    "/-/user",
    "/-/user/",
    "/-/user/org.couchdb.user:alice",
    "/-/whoami",
    "/-/whoami/",
    "/-/v1/search",
    "/-/v1/search?text=left-pad&size=20",
])
def test_origin_only_paths_go_to_origin(path):
    assert routed(facts(path)) == ("origin", "npm", "https://registry.npmjs.org/", "origin_only")


@pytest.mark.parametrize("path", ["/-/userx", "/-/whoamix", "/-/v1/searches", "/-/v1", "/left-pad"])
def test_paths_beside_origin_only_are_relayed(path):
    assert routed(facts(path)) == ("relay", "npm", "https://registry.npmjs.org/", "")


def test_origin_only_with_credentials_reports_credentials():
    assert routed(facts("/-/whoami", creds=True)) == ("origin", "npm", "https://registry.npmjs.org/", "credentials")


DOTS = "the path contains '.' or '..' segments"
PERCENT = "the path contains a malformed percent-escape"
CONTROL = "the path contains spaces or control characters"


@pytest.mark.parametrize("path, reason", [
    ("/a/../b", DOTS),
    ("/a/./b", DOTS),
    ("/..", DOTS),
    ("/a/..", DOTS),
    ("/a/%2e%2e/b", DOTS),
    ("/a/%2E%2E/b", DOTS),
    ("/a/%2E./b", DOTS),
    ("/a/.%2e/b", DOTS),
    ("/a/%2e/b", DOTS),
    ("/a/%2e%2e?x=1", DOTS),
    ("/a%zz", PERCENT),
    ("/a%2", PERCENT),
    ("/a%", PERCENT),
    ("/a/%g0/b", PERCENT),
    ("/a b", CONTROL),
    ("/a\tb", CONTROL),
    ("/a\x00b", CONTROL),
    ("/a\x1fb", CONTROL),
    ("/a\x7fb", CONTROL),
    ("/a?q=x y", CONTROL),
    ("/a\r\nX-Injected: 1", CONTROL),
    ("/caf\u00e9", "the request target contains characters outside ASCII; they must be percent-encoded"),
    ("/a?q=\u00e9", "the request target contains characters outside ASCII; they must be percent-encoded"),
    ("/a%0Ab/c.tgz", "the path contains a percent-encoded control character"),
    ("/.%00.", "the path contains a percent-encoded control character"),
    ("/a%7f", "the path contains a percent-encoded control character"),
])
def test_bad_paths_are_rejected(path, reason):
    assert path_problem(path) == reason
    assert routed(facts(path)) == ("reject", "npm", "https://registry.npmjs.org/", reason)


def test_reject_comes_before_method_and_credentials():
    assert routed(facts("/a/../b", method="POST", creds=True)) == (
        "reject", "npm", "https://registry.npmjs.org/", DOTS)


@pytest.mark.parametrize("path", [
    "/",
    "/left-pad",
    "/@babel%2fcore",
    "/@babel%2Fcore/-/core-7.0.0.tgz",
    "/a/...",
    "/a/.hidden",
    "/a/..b",
    "/a/%252e%252e/b",
    "/a?x=%zz",
    "/a?x=../..",
    "/caf%C3%A9",
    "/a%20b",  # an encoded space is a name some registries allow
    "/a?q=%0a",  # the query is the upstream's business
])
def test_good_paths(path):
    assert path_problem(path) is None


def test_relative_request_target_is_a_problem():
    assert path_problem("left-pad") == "the request target must be an absolute path"
    assert path_problem("") == "the request target must be an absolute path"


@pytest.mark.parametrize("path", [
    "/simple/..%2f..%2fadmin/",
    "/simple/%2e%2e%2fadmin",
    "/simple/x%2f..%2f..%2f..%2fadmin",
    "/simple/%2E%2E%2Fadmin",
])
def test_encoded_slash_cannot_hide_dot_segments(path):
    # Many servers decode '..%2f' to '../' and then resolve it; mapped onto a mirror
    # prefix it would climb out of that prefix.
    assert path_problem(path) == DOTS


def test_split_query():
    assert split_query("/a/b?x=1&y=?") == ("/a/b", "?x=1&y=?")
    assert split_query("/a/b") == ("/a/b", "")
    assert split_query("/a/b?") == ("/a/b", "?")


# --------------------------------------------------------------------------------------
# map_url


def P(scheme: str, host: str, port: int, path: str) -> Prefix:
    return Prefix(scheme, host, port, path)


ROOT_ORIGIN = P("https", "registry.npmjs.org", 443, "")
SUMDB_ORIGIN = P("https", "proxy.golang.org", 443, "/sumdb/sum.golang.org")


@pytest.mark.parametrize("origin, upstream, path, url", [
    (ROOT_ORIGIN, P("https", "registry.npmmirror.com", 443, ""), "/left-pad",
     "https://registry.npmmirror.com/left-pad"),
    (ROOT_ORIGIN, P("https", "mirrors.huaweicloud.com", 443, "/repository/npm"), "/left-pad",
     "https://mirrors.huaweicloud.com/repository/npm/left-pad"),
    (ROOT_ORIGIN, P("https", "registry.npmmirror.com", 443, ""), "/",
     "https://registry.npmmirror.com/"),
    (ROOT_ORIGIN, P("https", "mirrors.huaweicloud.com", 443, "/repository/npm"), "/",
     "https://mirrors.huaweicloud.com/repository/npm/"),
    (ROOT_ORIGIN, P("https", "registry.npmmirror.com", 443, ""), "/@scope%2fname",
     "https://registry.npmmirror.com/@scope%2fname"),
    (ROOT_ORIGIN, P("https", "registry.npmmirror.com", 443, ""), "/@scope%2Fname/-/name-1.0.0.tgz?a=%2F&b",
     "https://registry.npmmirror.com/@scope%2Fname/-/name-1.0.0.tgz?a=%2F&b"),
    (ROOT_ORIGIN, P("https", "registry.npmmirror.com", 443, ""), "/left-pad?write=true",
     "https://registry.npmmirror.com/left-pad?write=true"),
    (SUMDB_ORIGIN, P("https", "sum.golang.google.cn", 443, ""), "/sumdb/sum.golang.org/lookup/x@v1.0.0",
     "https://sum.golang.google.cn/lookup/x@v1.0.0"),
    (SUMDB_ORIGIN, P("https", "goproxy.cn", 443, "/sumdb/sum.golang.org"), "/sumdb/sum.golang.org/tile/8/0/x001",
     "https://goproxy.cn/sumdb/sum.golang.org/tile/8/0/x001"),
    (SUMDB_ORIGIN, P("https", "sum.golang.google.cn", 443, ""), "/sumdb/sum.golang.org",
     "https://sum.golang.google.cn"),
    (SUMDB_ORIGIN, P("https", "sum.golang.google.cn", 443, ""), "/sumdb/sum.golang.org?x=1",
     "https://sum.golang.google.cn?x=1"),
    (P("http", "deb.debian.org", 80, "/debian"), P("http", "mirror.example", 8080, "/pub/debian"),
     "/debian/dists/bookworm/InRelease", "http://mirror.example:8080/pub/debian/dists/bookworm/InRelease"),
    (ROOT_ORIGIN, P("https", "::1", 8443, "/npm"), "/x", "https://[::1]:8443/npm/x"),
    (ROOT_ORIGIN, P("http", "m.example", 443, ""), "/x", "http://m.example:443/x"),
])
def test_map_url(origin, upstream, path, url):
    assert map_url(origin, upstream, path) == url


def test_map_url_to_the_origin_itself_is_identity():
    assert map_url(SUMDB_ORIGIN, SUMDB_ORIGIN, "/sumdb/sum.golang.org/latest?x=1") == (
        "https://proxy.golang.org/sumdb/sum.golang.org/latest?x=1")


@pytest.mark.parametrize("path", ["/sumdb/sum.golang.orgx/latest", "/other", "/"])
def test_map_url_refuses_paths_outside_the_origin(path):
    with pytest.raises(ValueError) as ei:
        map_url(SUMDB_ORIGIN, P("https", "m.example", 443, ""), path)
    assert str(ei.value) == f"{path!r} is not under https://proxy.golang.org/sumdb/sum.golang.org/"


def test_route_and_map_url_together():
    f = facts("/sumdb/sum.golang.org/lookup/x@v1?y=2", host="proxy.golang.org")
    r = route(RULES, f)
    assert [map_url(r.prefix, m, f.path) for m in r.rule.mirrors_for("cn")] == [
        "https://goproxy.cn/sumdb/sum.golang.org/lookup/x@v1?y=2",
        "https://sum.golang.google.cn/lookup/x@v1?y=2",
    ]


# --------------------------------------------------------------------------------------
# Fallback and circuit accounting


@pytest.mark.parametrize("outcome, expected", [
    ("connect_error", True),
    ("timeout", True),
    ("tls_error", False),
    ("protocol_error", False),
    ("nonsense", False),
    (500, True),
    (502, True),
    (503, True),
    (599, True),
    (429, True),
    (404, True),
    (400, False),
    (401, False),
    (403, False),
    (410, False),
    (200, False),
    (204, False),
    (206, False),
    (301, False),
    (302, False),
    (304, False),
    (399, False),
])
def test_should_fall_back_npm(outcome, expected):
    assert should_fall_back(rule_named("npm"), outcome) is expected


@pytest.mark.parametrize("outcome, expected", [
    (503, True),
    (500, False),
    (502, False),
    (400, True),
    (404, True),
    (499, True),
    (200, False),
    (302, False),
    ("timeout", False),
])
def test_should_fall_back_exact_code_and_4xx_class(outcome, expected):
    assert should_fall_back(rule_named("status-only"), outcome) is expected


@pytest.mark.parametrize("outcome", [200, 201, 204, 206, 300, 301, 302, 303, 304, 307, 308])
def test_success_and_redirects_never_fall_back(outcome):
    # Even a rule whose fallback_on holds every kind accepted by the schema.
    rs = parse_rules("""\
version: 1
profiles: {cn: x}
default_profile: cn
rules:
  - name: all
    match: https://a.example/
    fallback_on: [connect_error, tls_error, timeout, protocol_error, 4xx, 5xx]
""", "rules/all.yaml")
    assert should_fall_back(rs.rules[0], outcome) is False


@pytest.mark.parametrize("outcome", [200, 204, 301, 302, 304, 399])
def test_success_and_redirects_never_fall_back_even_if_listed(outcome):
    # The schema refuses such entries; should_fall_back refuses them too.
    rule = dataclasses.replace(rule_named("npm"), fallback_on=frozenset({"2xx", "3xx", str(outcome)}))
    assert should_fall_back(rule, outcome) is False


@pytest.mark.parametrize("outcome, expected", [
    ("connect_error", True),
    ("tls_error", True),
    ("timeout", True),
    ("protocol_error", True),
    ("cancelled", False),
    (500, True),
    (502, True),
    (503, True),
    (504, True),
    (429, True),
    (404, False),
    (410, False),
    (401, False),
    (403, False),
    (400, False),
    (200, False),
    (304, False),
])
def test_counts_against_mirror(outcome, expected):
    assert counts_against_mirror(outcome) is expected


PRIVATE = parse_rules("""\
version: 1
profiles: {cn: China}
default_profile: cn
rules:
  - name: npm
    match: https://registry.npmjs.org/
    mirrors:
      cn: [https://registry.npmmirror.com/]
    private:
      - {paths: ["/@corp/**"], registry: "https://npm.corp.example/"}
      - {paths: ["/internal-*"]}
""", "rules/private.yaml")


@pytest.mark.parametrize("path, method, creds, registry", [
    ("/@corp%2fpkg", "GET", False, "https://npm.corp.example/"),
    ("/@corp/pkg/-/pkg-1.0.0.tgz", "GET", False, "https://npm.corp.example/"),
    ("/@corp%2fpkg", "PUT", True, "https://npm.corp.example/"),  # a publish goes there too
    ("/internal-tools", "GET", False, None),
])
def test_private_paths_go_to_their_registry_whatever_the_method(path, method, creds, registry):
    r = route(PRIVATE, facts(path, method=method, creds=creds))
    assert r.kind == "private" and (r.registry.url if r.registry else None) == registry
    assert r.reason.startswith("private /")
    assert map_url(r.prefix, r.registry or r.prefix, path).startswith(registry or "https://registry.npmjs.org/")


def test_public_paths_beside_private_ones_are_relayed():
    assert route(PRIVATE, facts("/@corpx%2fpkg")).kind == "relay"
    assert route(PRIVATE, facts("/left-pad")).kind == "relay"
    assert route(PRIVATE, facts("/@corp/../x")).kind == "reject"  # refused before anything else


@pytest.mark.parametrize("fields, problem", [
    ([(b"Accept", b"*/*")], None),
    ([(b"X-Tab", b"a\tb")], None),  # a tab is allowed inside a value
    ([(b"X-Bad", b"a\rb")], "the X-Bad header contains control characters"),
    ([(b"X-Bad", b"a\x00b")], "the X-Bad header contains control characters"),
    ([(b"Host", b"a"), (b"host", b"b")], "the request has more than one Host header"),
    ([(b"X-%d" % i, b"v") for i in range(101)], "the request has more than 100 header fields"),
    ([(b"X-Big", b"a" * 70_000)], "the request's header fields are larger than 64 KiB"),
])
def test_header_problems(fields, problem):
    assert header_problem(fields) == problem


@pytest.mark.parametrize("path, reason", [
    ("/a/..\\b", DOTS), ("/a/..%5cb", DOTS), ("/a/..;x/b", DOTS), ("/..#", "the request target contains a fragment ('#')"),
])
def test_dot_segment_lookalikes_and_fragments(path, reason):
    assert path_problem(path) == reason


def test_a_method_must_be_a_token_and_a_target_must_be_a_path():
    assert routed(facts("/x", method="GE(T")) == ("reject", "npm", "https://registry.npmjs.org/",
                                                   "the method is not an HTTP token")
    assert routed(facts("*", method="OPTIONS"))[0] == "reject"
