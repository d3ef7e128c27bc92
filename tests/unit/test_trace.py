"""The X-Mirrorgate header and the access-log record of one request."""

from __future__ import annotations

from mirrorgate.trace import HEADER, Hop, Trace, parse_header

MIRROR_A = Hop("mirror", "https://registry.npmmirror.com/")
MIRROR_B = Hop("mirror", "https://mirrors.huaweicloud.com/repository/npm/")
MIRROR_C = Hop("mirror", "https://mirrors.cloud.tencent.com/npm/")
ORIGIN = Hop("origin", "https://registry.npmjs.org/")


def test_header_name():
    assert HEADER == "X-Mirrorgate"


def test_hop_str():
    assert str(MIRROR_A) == "mirror:https://registry.npmmirror.com/"
    assert str(ORIGIN) == "origin:https://registry.npmjs.org/"


def test_served_by_mirror():
    t = Trace("npm", upstream=MIRROR_A)
    assert t.header() == "rule=npm; upstream=mirror:https://registry.npmmirror.com/"


def test_served_by_origin_after_fallbacks():
    t = Trace("npm", upstream=ORIGIN,
              fallbacks=[(MIRROR_A, "connect_error"), (MIRROR_B, "503")])
    assert t.header() == (
        "rule=npm; upstream=origin:https://registry.npmjs.org/; "
        "fallback=mirror:https://registry.npmmirror.com/ connect_error, "
        "mirror:https://mirrors.huaweicloud.com/repository/npm/ 503"
    )


def test_skipped_mirrors():
    t = Trace("npm", upstream=MIRROR_C, skipped=[MIRROR_A, MIRROR_B])
    assert t.header() == (
        "rule=npm; upstream=mirror:https://mirrors.cloud.tencent.com/npm/; "
        "skipped=mirror:https://registry.npmmirror.com/ circuit-open, "
        "mirror:https://mirrors.huaweicloud.com/repository/npm/ circuit-open"
    )


def test_route_note():
    t = Trace("npm", upstream=ORIGIN, route="method PUT")
    assert t.header() == "rule=npm; upstream=origin:https://registry.npmjs.org/; route=method PUT"


def test_no_upstream():
    t = Trace("npm")
    assert t.header() == "rule=npm; upstream=none"


def test_everything_in_order():
    t = Trace("npm", upstream=None, fallbacks=[(MIRROR_B, "timeout"), (ORIGIN, "connect_error")],
              skipped=[MIRROR_A], route="origin_only")
    assert t.header() == (
        "rule=npm; upstream=none; "
        "fallback=mirror:https://mirrors.huaweicloud.com/repository/npm/ timeout, "
        "origin:https://registry.npmjs.org/ connect_error; "
        "skipped=mirror:https://registry.npmmirror.com/ circuit-open; "
        "route=origin_only"
    )


def test_parse_header_round_trip():
    t = Trace("npm", upstream=ORIGIN, fallbacks=[(MIRROR_A, "404"), (MIRROR_B, "timeout")],
              skipped=[MIRROR_C], route="credentials")
    assert parse_header(t.header()) == {
        "rule": "npm",
        "upstream": "origin:https://registry.npmjs.org/",
        "fallback": "mirror:https://registry.npmmirror.com/ 404, mirror:https://mirrors.huaweicloud.com/repository/npm/ timeout",
        "skipped": "mirror:https://mirrors.cloud.tencent.com/npm/ circuit-open",
        "route": "credentials",
    }


def test_parse_header_minimal():
    assert parse_header(Trace("go-proxy").header()) == {"rule": "go-proxy", "upstream": "none"}
    assert parse_header(Trace("go-proxy", upstream=MIRROR_A).header()) == {
        "rule": "go-proxy", "upstream": "mirror:https://registry.npmmirror.com/"}


def test_parse_header_tolerates_whitespace_and_junk():
    assert parse_header(" rule = npm ; upstream=none; junk; route=a=b") == {
        "rule": "npm", "upstream": "none", "route": "a=b"}
    assert parse_header("") == {}


def test_record_full():
    t = Trace("npm", upstream=MIRROR_C, fallbacks=[(MIRROR_A, "connect_error"), (MIRROR_B, "503")],
              skipped=[ORIGIN], route="note")
    assert t.record() == {
        "rule": "npm",
        "upstream": "mirror:https://mirrors.cloud.tencent.com/npm/",
        "fallbacks": [
            {"upstream": "mirror:https://registry.npmmirror.com/", "cause": "connect_error"},
            {"upstream": "mirror:https://mirrors.huaweicloud.com/repository/npm/", "cause": "503"},
        ],
        "skipped": ["origin:https://registry.npmjs.org/"],
        "route": "note", "cache": None,
    }


def test_record_empty():
    assert Trace("npm").record() == {
        "rule": "npm", "upstream": None, "fallbacks": [], "skipped": [], "route": None, "cache": None,
    }


def test_default_lists_are_not_shared():
    a, b = Trace("a"), Trace("b")
    a.fallbacks.append((MIRROR_A, "timeout"))
    a.skipped.append(MIRROR_B)
    assert (b.fallbacks, b.skipped) == ([], [])
