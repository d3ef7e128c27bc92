"""The rules file: the shipped rules load, and every kind of bad file is refused with a
message naming the file, the line, the key path and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mirrorgate.rules import (
    BUILTIN_CIRCUIT,
    BUILTIN_FALLBACK_ON,
    BUILTIN_TIMEOUTS,
    CircuitPolicy,
    Prefix,
    RulesError,
    Timeouts,
    load_rules,
    parse_rules,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = ROOT / "rules" / "default.yaml"
F = "rules/x.yaml"

# Lines 1-6; a rules body passed to doc() starts on line 7.
HEAD = """\
version: 1
profiles:
  cn: Mirrors in China
  direct: Origins only
default_profile: cn
rules:
"""


def doc(body: str, head: str = HEAD) -> str:
    """HEAD followed by `body` (a YAML list of rules), indented under `rules:`."""
    return head + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  ")


def error(text: str) -> str:
    with pytest.raises(RulesError) as ei:
        parse_rules(text, F)
    return str(ei.value)


def parse(text: str):
    return parse_rules(text, F)


# --------------------------------------------------------------------------------------
# The shipped rules


@pytest.fixture(scope="module")
def shipped():
    return load_rules(DEFAULT_RULES)


def _lookup(rules, url: str):
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return rules.lookup(parts.scheme, parts.hostname, port, parts.path)


def test_shipped_rules_profiles_and_default(shipped):
    assert set(shipped.profiles) == {"cn", "direct"}
    assert shipped.default_profile == "cn"
    assert shipped.source == str(DEFAULT_RULES)


def test_shipped_rules_names(shipped):
    assert [r.name for r in shipped.rules] == [
        "go-sumdb-via-proxy", "go-proxy", "go-sumdb", "npm", "pypi-simple", "pypi-files",
        "docker-hub", "docker-hub-auth", "maven-central", "crates-index", "crates-files", "rubygems", "debian",
        "debian-security", "ubuntu", "ubuntu-ports", "alpine", "conda", "huggingface",
    ]


@pytest.mark.parametrize("url, name", [
    ("https://proxy.golang.org/github.com/pkg/errors/@v/list", "go-proxy"),
    ("https://proxy.golang.org/sumdb/sum.golang.org/lookup/github.com/pkg/errors@v0.9.1", "go-sumdb-via-proxy"),
    ("https://sum.golang.org/lookup/github.com/pkg/errors@v0.9.1", "go-sumdb"),
    ("https://registry.npmjs.org/left-pad", "npm"),
    ("https://pypi.org/simple/requests/", "pypi-simple"),
    ("https://files.pythonhosted.org/packages/f9/9b/x/requests-2.32.3-py3-none-any.whl", "pypi-files"),
    ("https://registry-1.docker.io/v2/library/alpine/manifests/latest", "docker-hub"),
    ("https://auth.docker.io/token?service=registry.docker.io&scope=repository:library/alpine:pull", "docker-hub-auth"),
    ("https://repo1.maven.org/maven2/junit/junit/4.13.2/junit-4.13.2.pom", "maven-central"),
    ("https://repo.maven.apache.org/maven2/junit/junit/4.13.2/junit-4.13.2.pom", "maven-central"),
    ("https://index.crates.io/se/rd/serde", "crates-index"),
    ("https://static.crates.io/crates/serde/serde-1.0.210.crate", "crates-files"),
    ("https://rubygems.org/gems/rails-7.1.0.gem", "rubygems"),
    ("https://index.rubygems.org/info/rails", "rubygems"),
    ("http://deb.debian.org/debian/dists/bookworm/InRelease", "debian"),
    ("https://deb.debian.org/debian/dists/bookworm/InRelease", "debian"),
    ("http://security.debian.org/debian-security/dists/bookworm-security/InRelease", "debian-security"),
    ("http://archive.ubuntu.com/ubuntu/dists/noble/InRelease", "ubuntu"),
    ("http://security.ubuntu.com/ubuntu/dists/noble-security/InRelease", "ubuntu"),
    ("http://ports.ubuntu.com/ubuntu-ports/dists/noble/InRelease", "ubuntu-ports"),
    ("https://conda.anaconda.org/conda-forge/noarch/repodata.json", "conda"),
    ("https://huggingface.co/gpt2/resolve/main/config.json", "huggingface"),
    ("https://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/APKINDEX.tar.gz", "alpine"),
    ("http://dl-cdn.alpinelinux.org/alpine/v3.20/main/x86_64/APKINDEX.tar.gz", "alpine"),
])
def test_shipped_rules_cover_registry(shipped, url, name):
    found = _lookup(shipped, url)
    assert found is not None
    assert found[0].name == name


def test_shipped_rules_every_cn_mirror_list_is_non_empty(shipped):
    for rule in shipped.rules:
        if "cn" in rule.mirrors:
            assert len(rule.mirrors_for("cn")) >= 1, rule.name
    # Every shipped rule but the token service has cn mirrors; none has mirrors for "direct".
    assert [r.name for r in shipped.rules if not r.mirrors_for("cn")] == ["docker-hub-auth"]
    assert [r.name for r in shipped.rules if r.mirrors_for("direct")] == []


def test_shipped_rules_defaults(shipped):
    ubuntu_ports = {r.name: r for r in shipped.rules}["ubuntu-ports"]
    assert ubuntu_ports.timeouts == Timeouts(connect=3.0, first_byte=15.0, idle=60.0)
    assert ubuntu_ports.circuit == CircuitPolicy(failures=3, cooldown=30.0)
    # YAML anchors share one fallback list between rules.
    assert ubuntu_ports.fallback_on == frozenset(
        {"connect_error", "tls_error", "timeout", "protocol_error", "5xx", "429", "403", "404", "410"})


def test_shipped_rules_specific_values(shipped):
    by_name = {r.name: r for r in shipped.rules}
    assert by_name["go-proxy"].mirrors_for("cn") == (
        Prefix("https", "goproxy.cn", 443, ""),
        Prefix("https", "mirrors.aliyun.com", 443, "/goproxy"),
    )
    assert by_name["docker-hub"].fallback_on == frozenset(
        {"connect_error", "tls_error", "timeout", "protocol_error", "5xx", "429", "401", "403", "404", "410"})
    assert by_name["crates-index"].origin_only == ("/config.json",)
    assert by_name["npm"].origin_only == ("/-/user", "/-/whoami", "/-/v1/login", "/-/v1/search", "/-/npm/v1")
    assert by_name["maven-central"].match == (
        Prefix("https", "repo1.maven.org", 443, "/maven2"),
        Prefix("https", "repo.maven.apache.org", 443, "/maven2"),
    )
    npm_line = Path(DEFAULT_RULES).read_text().splitlines().index("  - name: npm") + 1
    assert by_name["npm"].where == f"{DEFAULT_RULES}:{npm_line}"


# --------------------------------------------------------------------------------------
# Good files: shapes and defaults


MINIMAL = doc("""
    - name: a
      match: https://a.example/
""")


def test_minimal_file_uses_builtin_defaults():
    rs = parse(MINIMAL)
    (rule,) = rs.rules
    assert rule.name == "a"
    assert rule.match == (Prefix("https", "a.example", 443, ""),)
    assert dict(rule.mirrors) == {}
    assert rule.mirrors_for("cn") == ()
    assert rule.origin_only == ()
    assert rule.timeouts == Timeouts(**BUILTIN_TIMEOUTS)
    assert rule.timeouts == Timeouts(connect=5.0, first_byte=15.0, idle=60.0)
    assert rule.fallback_on == frozenset(BUILTIN_FALLBACK_ON)
    assert rule.circuit == CircuitPolicy(**BUILTIN_CIRCUIT)
    assert rule.where == "rules/x.yaml:7"
    assert rs.source == F
    assert dict(rs.profiles) == {"cn": "Mirrors in China", "direct": "Origins only"}


def test_profile_without_description_is_allowed():
    rs = parse("version: 1\nprofiles:\n  cn:\ndefault_profile: cn\nrules: []\n")
    assert dict(rs.profiles) == {"cn": ""}
    assert rs.rules == ()


def test_match_can_be_a_list():
    rs = parse(doc("""
        - name: maven
          match:
            - https://repo1.maven.org/maven2/
            - http://Repo.Maven.Apache.org:8080/maven2
    """))
    assert rs.rules[0].match == (
        Prefix("https", "repo1.maven.org", 443, "/maven2"),
        Prefix("http", "repo.maven.apache.org", 8080, "/maven2"),
    )


def test_prefix_normalisation():
    rs = parse(doc("""
        - name: a
          match: HTTPS://A.Example:443/Some/Path/
          mirrors:
            cn:
              - http://m.example/
              - https://[2001:db8::1]:8443/x
    """))
    rule = rs.rules[0]
    assert rule.match == (Prefix("https", "a.example", 443, "/Some/Path"),)
    assert rule.match[0].url == "https://a.example/Some/Path/"
    assert rule.mirrors_for("cn") == (
        Prefix("http", "m.example", 80, ""),
        Prefix("https", "2001:db8::1", 8443, "/x"),
    )
    assert [p.url for p in rule.mirrors_for("cn")] == ["http://m.example/", "https://[2001:db8::1]:8443/x/"]


def test_mirrors_for_profile_may_be_empty():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          mirrors:
            cn: [https://m.example/]
            direct:
    """))
    assert dict(rs.rules[0].mirrors) == {"cn": (Prefix("https", "m.example", 443, ""),), "direct": ()}


def test_rule_timeouts_merge_over_defaults():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          timeouts: {first_byte: 1s}
    """, head=HEAD.replace("rules:\n", "defaults:\n  timeouts: {connect: 2s, idle: 40s}\nrules:\n")))
    assert rs.rules[0].timeouts == Timeouts(connect=2.0, first_byte=1.0, idle=40.0)


def test_rule_timeouts_merge_over_builtin_defaults():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          timeouts: {first_byte: 1s}
    """))
    assert rs.rules[0].timeouts == Timeouts(connect=5.0, first_byte=1.0, idle=60.0)


def test_rule_fallback_on_replaces_default():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          fallback_on: [timeout, 404]
        - name: b
          match: https://b.example/
    """, head=HEAD.replace("rules:\n", "defaults:\n  fallback_on: [connect_error, 4xx, 503]\nrules:\n")))
    assert rs.rules[0].fallback_on == frozenset({"timeout", "404"})
    assert rs.rules[1].fallback_on == frozenset({"connect_error", "4xx", "503"})


def test_rule_circuit_merges_over_defaults():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          circuit: {failures: 7}
        - name: b
          match: https://b.example/
          circuit: {cooldown: 2m}
    """, head=HEAD.replace("rules:\n", "defaults:\n  circuit: {cooldown: 10s}\nrules:\n")))
    assert rs.rules[0].circuit == CircuitPolicy(failures=7, cooldown=10.0)
    assert rs.rules[1].circuit == CircuitPolicy(failures=3, cooldown=120.0)


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5),
    ("3s", 3.0),
    ("2m", 120.0),
    ("1h", 3600.0),
    ("3", 3.0),
    ("1.5", 1.5),
    ("'7'", 7.0),
    ("2.5s", 2.5),
    ("' 250 ms '", 0.25),
])
def test_durations(text, seconds):
    rs = parse(doc(f"""
        - name: a
          match: https://a.example/
          timeouts: {{connect: {text}}}
    """))
    assert rs.rules[0].timeouts.connect == seconds


def test_yaml_integer_forms_in_circuit_failures():
    # YAML 1.1 integer spellings are read as PyYAML reads them (010 is octal 8).
    assert yaml.safe_load("x: 010")["x"] == 8
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          circuit: {failures: 010}
    """))
    assert rs.rules[0].circuit.failures == 8


def test_yaml_integer_forms_in_fallback_on():
    # YAML ints such as 0x1F4 (500) are status codes too.
    assert yaml.safe_load("x: 0x1F4")["x"] == 500
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          fallback_on: [0x1F4]
    """))
    assert rs.rules[0].fallback_on == frozenset({"500"})


def test_intercepted_authorities():
    rs = parse(doc("""
        - name: a
          match: [https://a.example/x/, https://a.example/y/, http://b.example/, https://c.example:8443/]
    """))
    assert rs.intercepted_authorities() == [("a.example", 443), ("c.example", 8443)]


# --------------------------------------------------------------------------------------
# Bad files: one test per kind, each with the full message


def test_yaml_syntax_error_has_line_and_column():
    text = doc("""
        - name: a
          match: [https://a.example/
    """)
    assert error(text) == "rules/x.yaml:9:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"


def test_yaml_syntax_error_tab():
    assert error("version: 1\n\tprofiles: {}\n") == (
        "rules/x.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token")


def test_yaml_syntax_error_bad_indentation():
    text = "version: 1\nprofiles:\n  cn: x\n direct: y\n"
    assert error(text) == (
        "rules/x.yaml:4:2: YAML syntax error: expected <block end>, but found '<block mapping start>'")


def test_unknown_top_level_key():
    text = HEAD.replace("default_profile: cn\n", "default_profile: cn\nmirrors: {}\n") + "  []\n"
    assert error(text) == (
        "rules/x.yaml:6: mirrors: unknown key (allowed: version, profiles, default_profile, defaults, rules)")


def test_unknown_top_level_key_with_hint():
    text = HEAD.replace("default_profile: cn\n", "default_profile: cn\ndefault:\n  circuit: {}\n") + "  []\n"
    assert error(text) == (
        "rules/x.yaml:6: default: unknown key (allowed: version, profiles, default_profile, defaults, rules); "
        "did you mean 'defaults'?")


def test_unknown_rule_key_with_hint():
    text = doc("""
        - name: a
          match: https://a.example/
          mirror:
            cn: [https://m.example/]
    """)
    assert error(text) == (
        "rules/x.yaml:9: rules[0].mirror: unknown key (allowed: name, match, mirrors, origin_only, fallback_on, "
        "timeouts, circuit, cache, protocol, private); did you mean 'mirrors'?")


def test_unknown_rule_key_without_hint():
    text = doc("""
        - name: a
          match: https://a.example/
        - name: b
          match: https://b.example/
          zzz: 1
    """)
    assert error(text) == (
        "rules/x.yaml:11: rules[1].zzz: unknown key (allowed: name, match, mirrors, origin_only, fallback_on, "
        "timeouts, circuit, cache, protocol, private)")


def test_unknown_key_in_timeouts_and_circuit():
    text = doc("""
        - name: a
          match: https://a.example/
          timeouts:
            conect: 1s
    """)
    assert error(text) == (
        "rules/x.yaml:10: rules[0].timeouts.conect: unknown key (allowed: connect, first_byte, idle); "
        "did you mean 'connect'?")
    text = HEAD.replace("rules:\n", "defaults:\n  circuit:\n    failure: 2\nrules: []\n")
    assert error(text) == (
        "rules/x.yaml:8: defaults.circuit.failure: unknown key (allowed: failures, cooldown); "
        "did you mean 'failures'?")


def test_duplicate_mapping_key():
    text = doc("""
        - name: a
          match: https://a.example/
          mirrors:
            cn: [https://m.example/]
          name: b
    """)
    assert error(text) == "rules/x.yaml:11: rules[0].name: duplicate key (first given on line 7)"


def test_duplicate_top_level_key():
    text = "version: 1\nversion: 1\n"
    assert error(text) == "rules/x.yaml:2: version: duplicate key (first given on line 1)"


def test_duplicate_profile_key():
    text = "version: 1\nprofiles:\n  cn: a\n  cn: b\ndefault_profile: cn\nrules: []\n"
    assert error(text) == "rules/x.yaml:4: profiles.cn: duplicate key (first given on line 3)"


@pytest.mark.parametrize("url, problem", [
    ("ftp://a.example/", "'ftp://a.example/' is not an http:// or https:// URL"),
    ("a.example/pkg/", "'a.example/pkg/' is not an http:// or https:// URL"),
    ("https:///pkg/", "'https:///pkg/' has no host"),
    ("https://user:secret@a.example/", "'https://user:secret@a.example/' carries credentials; rules must not hold secrets"),
    ("https://token@a.example/", "'https://token@a.example/' carries credentials; rules must not hold secrets"),
    ("https://a.example/simple/?x=1", "'https://a.example/simple/?x=1' must be a plain prefix, without '?' or '#'"),
    ("https://a.example/simple/?", "'https://a.example/simple/?' must be a plain prefix, without '?' or '#'"),
    ("https://a.example/simple/#top", "'https://a.example/simple/#top' must be a plain prefix, without '?' or '#'"),
    ("https://a.example/a/../b/", "'https://a.example/a/../b/' has empty, '.' or '..' path segments"),
    ("https://a.example/a/./b/", "'https://a.example/a/./b/' has empty, '.' or '..' path segments"),
    ("https://a.example/a//b/", "'https://a.example/a//b/' has empty, '.' or '..' path segments"),
    ("https://a.example:99999/", "'https://a.example:99999/' is not a valid URL: Port out of range 0-65535"),
])
def test_bad_match_url(url, problem):
    text = doc(f"""
        - name: a
          match: "{url}"
    """)
    assert error(text) == f"rules/x.yaml:8: rules[0].match: {problem}"


def test_bad_url_in_match_list_and_mirror_list_names_the_index():
    text = doc("""
        - name: a
          match:
            - https://a.example/
            - http://user@b.example/
    """)
    assert error(text) == (
        "rules/x.yaml:10: rules[0].match[1]: 'http://user@b.example/' carries credentials; rules must not hold secrets")
    text = doc("""
        - name: a
          match: https://a.example/
          mirrors:
            cn:
              - https://m.example/
              - https://m2.example/x/../
    """)
    assert error(text) == (
        "rules/x.yaml:12: rules[0].mirrors.cn[1]: 'https://m2.example/x/../' has empty, '.' or '..' path segments")


def test_match_not_a_string():
    text = doc("""
        - name: a
          match: {url: https://a.example/}
    """)
    assert error(text) == "rules/x.yaml:8: rules[0].match: expected a non-empty string, got a mapping"


def test_empty_match_list():
    text = doc("""
        - name: a
          match: []
    """)
    assert error(text) == "rules/x.yaml:8: rules[0].match: give at least one URL prefix"


def test_duplicate_match_across_rules():
    text = doc("""
        - name: a
          match:
            - https://a.example/one/
            - https://a.example/pkg/
        - name: b
          match: https://A.example:443/pkg
    """)
    assert error(text) == (
        "rules/x.yaml:12: rules[1].match: https://a.example/pkg/ is already matched by rules[0].match[1] (line 10)")


def test_duplicate_match_within_a_rule():
    text = doc("""
        - name: a
          match: [https://a.example/pkg/, https://a.example/pkg]
    """)
    assert error(text) == (
        "rules/x.yaml:8: rules[0].match[1]: https://a.example/pkg/ is already matched by rules[0].match[0] (line 8)")


def test_same_host_different_scheme_or_port_is_not_a_duplicate():
    rs = parse(doc("""
        - name: a
          match: [https://a.example/, http://a.example/, https://a.example:8443/]
    """))
    assert len(rs.rules[0].match) == 3


def test_mirror_equal_to_origin():
    text = doc("""
        - name: a
          match: https://a.example/pkg/
          mirrors:
            cn:
              - https://m.example/
              - https://a.example:443/pkg
    """)
    assert error(text) == "rules/x.yaml:12: rules[0].mirrors.cn[1]: https://a.example/pkg/ is the origin itself, not a mirror"


def test_mirror_listed_twice():
    text = doc("""
        - name: a
          match: https://a.example/
          mirrors:
            cn:
              - https://m.example/pkg/
              - https://other.example/
              - https://M.example/pkg
    """)
    assert error(text) == "rules/x.yaml:13: rules[0].mirrors.cn[2]: https://m.example/pkg/ is listed twice"


def test_mirror_for_undeclared_profile():
    text = doc("""
        - name: a
          match: https://a.example/
          mirrors:
            eu: [https://m.example/]
    """)
    assert error(text) == "rules/x.yaml:10: rules[0].mirrors.eu: 'eu' is not a declared profile (cn, direct)"


def test_default_profile_not_declared():
    text = "version: 1\nprofiles:\n  cn: x\n  direct: y\ndefault_profile: eu\nrules: []\n"
    assert error(text) == "rules/x.yaml:5: default_profile: 'eu' is not a declared profile (cn, direct)"


def test_no_profiles():
    text = "version: 1\nprofiles: {}\ndefault_profile: cn\nrules: []\n"
    assert error(text) == "rules/x.yaml:2: profiles: declare at least one profile"


def test_bad_profile_name():
    text = "version: 1\nprofiles:\n  CN: x\ndefault_profile: CN\nrules: []\n"
    assert error(text) == "rules/x.yaml:3: profiles.CN: 'CN' is not a valid profile name"


@pytest.mark.parametrize("value, problem", [
    ("3 parsecs", "'3 parsecs' is not a duration (examples: 500ms, 3s, 2m)"),
    ("0s", "must be greater than zero"),
    ("0", "must be greater than zero"),
    ("0ms", "must be greater than zero"),
    ("-1s", "'-1s' is not a duration (examples: 500ms, 3s, 2m)"),
    ("yes", "expected a duration such as 500ms, 3s or 2m, got bool 'yes'"),
    ("[1s]", "expected a duration such as 500ms, 3s or 2m, got a list"),
])
def test_bad_duration(value, problem):
    text = doc(f"""
        - name: a
          match: https://a.example/
          timeouts:
            idle: {value}
    """)
    assert error(text) == f"rules/x.yaml:10: rules[0].timeouts.idle: {problem}"


def test_bad_duration_in_defaults_circuit():
    text = HEAD.replace("rules:\n", "defaults:\n  circuit:\n    cooldown: 3 parsecs\nrules: []\n")
    assert error(text) == (
        "rules/x.yaml:8: defaults.circuit.cooldown: '3 parsecs' is not a duration (examples: 500ms, 3s, 2m)")


FAILURE_KINDS = "connect_error, tls_error, timeout, protocol_error, 4xx, 5xx, or a status code 400-599"


@pytest.mark.parametrize("items, index, problem", [
    ("[timeout, conection_error]", 1, f"'conection_error' is not a failure kind ({FAILURE_KINDS})"),
    ("[3xx]", 0, f"'3xx' is not a failure kind ({FAILURE_KINDS})"),
    ("['404']", 0, f"'404' is not a failure kind ({FAILURE_KINDS})"),
    ("[5xx, 200]", 1, "status 200 is not an error status (400-599)"),
    ("[399]", 0, "status 399 is not an error status (400-599)"),
    ("[600]", 0, "status 600 is not an error status (400-599)"),
])
def test_bad_fallback_on(items, index, problem):
    text = doc(f"""
        - name: a
          match: https://a.example/
          fallback_on: {items}
    """)
    assert error(text) == f"rules/x.yaml:9: rules[0].fallback_on[{index}]: {problem}"


@pytest.mark.parametrize("item, kind", [("[timeout]", "a list"), ("{timeout: 1}", "a mapping")])
def test_fallback_on_item_of_wrong_shape(item, kind):
    # The message names the kind of node, not PyYAML's internal node list.
    text = doc(f"""
        - name: a
          match: https://a.example/
          fallback_on: [{item}]
    """)
    assert error(text) == f"rules/x.yaml:9: rules[0].fallback_on[0]: {kind} is not a failure kind ({FAILURE_KINDS})"


def test_fallback_on_boundaries_accepted():
    rs = parse(doc("""
        - name: a
          match: https://a.example/
          fallback_on: [400, 599, 4xx, tls_error]
    """))
    assert rs.rules[0].fallback_on == frozenset({"400", "599", "4xx", "tls_error"})


def test_bad_fallback_on_in_defaults():
    text = HEAD.replace("rules:\n", "defaults:\n  fallback_on:\n    - timeout\n    - 200\nrules: []\n")
    assert error(text) == "rules/x.yaml:9: defaults.fallback_on[1]: status 200 is not an error status (400-599)"


@pytest.mark.parametrize("body, message", [
    ("""
        - name: a
          match: https://a.example/
          mirrors:
            cn: https://m.example/
    """, "rules/x.yaml:10: rules[0].mirrors.cn: expected a list, got str 'https://m.example/'"),
    ("""
        - name: a
          match: https://a.example/
          origin_only: /login
    """, "rules/x.yaml:9: rules[0].origin_only: expected a list, got str '/login'"),
    ("""
        - name: a
          match: https://a.example/
          fallback_on: 5xx
    """, "rules/x.yaml:9: rules[0].fallback_on: expected a list, got str '5xx'"),
    ("""
        - name: a
          match: https://a.example/
          mirrors: [https://m.example/]
    """, "rules/x.yaml:9: rules[0].mirrors: expected a mapping, got a list"),
    ("""
        - name: a
          match: https://a.example/
          timeouts: 3s
    """, "rules/x.yaml:9: rules[0].timeouts: expected a mapping, got str '3s'"),
    ("""
        - name: 3
          match: https://a.example/
    """, "rules/x.yaml:7: rules[0].name: expected a non-empty string, got int '3'"),
    ("""
        - name: ''
          match: https://a.example/
    """, "rules/x.yaml:7: rules[0].name: expected a non-empty string, got nothing"),
    ("""
        - name: My Rule
          match: https://a.example/
    """, "rules/x.yaml:7: rules[0].name: 'My Rule' is not a valid name (use lowercase letters, digits, '.', '_', '-')"),
    ("""
        - https://a.example/
    """, "rules/x.yaml:7: rules[0]: expected a mapping, got str 'https://a.example/'"),
    ("""
        - name: a
          match: https://a.example/
          circuit: {failures: 0}
    """, "rules/x.yaml:9: rules[0].circuit.failures: must be at least 1, got 0"),
    ("""
        - name: a
          match: https://a.example/
          circuit: {failures: '3'}
    """, "rules/x.yaml:9: rules[0].circuit.failures: expected an integer, got str '3'"),
    ("""
        - name: a
          match: https://a.example/
          origin_only: [login]
    """, "rules/x.yaml:9: rules[0].origin_only[0]: 'login' must be a path starting with '/'"),
    ("""
        - name: a
          match: https://a.example/
          origin_only: ['/search?q']
    """, "rules/x.yaml:9: rules[0].origin_only[0]: '/search?q' must be a path starting with '/'"),
    ("""
        - name: a
          match: https://a.example/
          origin_only: [7]
    """, "rules/x.yaml:9: rules[0].origin_only[0]: expected a non-empty string, got int '7'"),
])
def test_wrong_types_in_rule(body, message):
    assert error(doc(body)) == message


@pytest.mark.parametrize("text, message", [
    ("version: 1\nprofiles: cn\ndefault_profile: cn\nrules: []\n",
     "rules/x.yaml:2: profiles: expected a mapping, got str 'cn'"),
    ("version: 1\nprofiles: {cn: x}\ndefault_profile: cn\nrules: {a: 1}\n",
     "rules/x.yaml:4: rules: expected a list, got a mapping"),
    ("version: 1\nprofiles: {cn: x}\ndefault_profile: [cn]\nrules: []\n",
     "rules/x.yaml:3: default_profile: expected a non-empty string, got a list"),
    ("version: 1\nprofiles: {cn: 5}\ndefault_profile: cn\nrules: []\n",
     "rules/x.yaml:2: profiles.cn: expected a description string, got int '5'"),
    ("version: '1'\nprofiles: {cn: x}\ndefault_profile: cn\nrules: []\n",
     "rules/x.yaml:1: version: expected an integer, got str '1'"),
    ("version: 1\nprofiles: {cn: x}\ndefault_profile: cn\ndefaults: [1]\nrules: []\n",
     "rules/x.yaml:4: defaults: expected a mapping, got a list"),
])
def test_wrong_types_top_level(text, message):
    assert error(text) == message


@pytest.mark.parametrize("drop, line", [
    ("version: 1\n", 1),
    ("profiles:\n  cn: Mirrors in China\n  direct: Origins only\n", 1),
    ("default_profile: cn\n", 1),
    ("rules:\n", 1),
])
def test_missing_top_level_key(drop, line):
    text = "# a comment first\n" + HEAD.replace(drop, "")
    if drop != "rules:\n":
        text += "  []\n"
    key = drop.split(":")[0]
    assert error(text) == f"rules/x.yaml:{line + 1}: {key}: missing required key"


def test_missing_rule_keys():
    text = doc("""
        - name: a
          match: https://a.example/
        - match: https://b.example/
    """)
    assert error(text) == "rules/x.yaml:9: rules[1].name: missing required key"
    text = doc("""
        - name: a
          mirrors: {cn: [https://m.example/]}
    """)
    assert error(text) == "rules/x.yaml:7: rules[0].match: missing required key"


@pytest.mark.parametrize("version, message", [
    ("2", "rules/x.yaml:1: version: unsupported schema version 2 (this build reads 1)"),
    ("0", "rules/x.yaml:1: version: must be at least 1, got 0"),
    ("1.0", "rules/x.yaml:1: version: expected an integer, got float '1.0'"),
])
def test_unsupported_version(version, message):
    text = HEAD.replace("version: 1\n", f"version: {version}\n") + "  []\n"
    assert error(text) == message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text):
    assert error(text) == "rules/x.yaml: the rules file is empty"


def test_document_marker_only_file_is_empty():
    assert error("---\n# rules to come\n") == "rules/x.yaml: the rules file is empty"


def test_top_level_errors_have_no_empty_key_path():
    message = error("- name: a\n  match: https://a.example/\n")
    assert message == "rules/x.yaml:1: top level: expected a mapping, got a list"


def test_multiple_yaml_documents():
    text = MINIMAL + "---\nversion: 1\n"
    assert error(text) == "rules/x.yaml:10: only one YAML document is allowed"


def test_duplicate_rule_name():
    text = doc("""
        - name: a
          match: https://a.example/
        - name: b
          match: https://b.example/
        - name: a
          match: https://c.example/
    """)
    assert error(text) == "rules/x.yaml:11: rules[2].name: rule name 'a' is already used on line 7"


def test_load_rules_reads_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    rs = load_rules(path)
    assert rs.source == str(path)
    assert rs.rules[0].where == f"{path}:7"


def test_load_rules_errors_name_the_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD.replace("version: 1\n", "version: 2\n") + "  []\n", encoding="utf-8")
    with pytest.raises(RulesError) as ei:
        load_rules(path)
    assert str(ei.value) == f"{path}:1: version: unsupported schema version 2 (this build reads 1)"


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(RulesError) as ei:
        load_rules(path)
    assert str(ei.value) == f"{path}: rules file not found"


def test_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nprofiles: {cn: \xe9}\n")
    with pytest.raises(RulesError) as ei:
        load_rules(path)
    assert str(ei.value).startswith(f"{path}: cannot read rules file: 'utf-8' codec can't decode byte 0xe9")


def test_rules_error_is_a_value_error():
    assert issubclass(RulesError, ValueError)


# --------------------------------------------------------------------------------------
# The cache section


def test_cache_section_and_defaults():
    rs = parse(HEAD.replace("rules:\n", "defaults:\n  cache: {ttl: 2m}\nrules:\n") + textwrap.indent(textwrap.dedent("""
        - name: a
          match: https://a.example/
          cache:
            artifacts: ["/**/-/*.tgz", 're:/x/[0-9]+']
            metadata: ["/*"]
            vary: [Accept]
    """).lstrip("\n"), "  "))
    c = rs.rules[0].cache
    assert (c.ttl, c.negative_ttl, c.vary) == (120.0, 60.0, ("accept",))
    assert [p.text for p in c.artifacts] == ["/**/-/*.tgz", "re:/x/[0-9]+"]
    assert c.artifacts[0].matches("/a/b/-/b-1.tgz") and not c.artifacts[0].matches("/a/-/x/b.tgz")
    assert c.artifacts[1].matches("/x/12") and not c.artifacts[1].matches("/x/12/y")
    assert c.metadata[0].matches("/left-pad") and not c.metadata[0].matches("/a/b")
    assert parse(MINIMAL).rules[0].cache is None


@pytest.mark.parametrize("cache, message", [
    ("{ttl: 1m}", "rules[0].cache: name at least one of artifacts or metadata"),
    ("{artifacts: [x.tgz]}", "rules[0].cache.artifacts[0]: 'x.tgz' must be a path glob starting with '/' or 're:<regex>'"),
    ("{artifacts: ['re:(']}", "rules[0].cache.artifacts[0]: '(' is not a valid regular expression: "
                              "missing ), unterminated subpattern at position 0"),
    ("{metadata: ['/*'], vary: ['Accept:']}", "rules[0].cache.vary[0]: 'Accept:' is not a header name"),
    ("{metadata: ['/*'], ttl: soon}", "rules[0].cache.ttl: 'soon' is not a duration (examples: 500ms, 3s, 2m)"),
    ("{metadata: ['/*'], keep: true}", "rules[0].cache.keep: unknown key (allowed: artifacts, metadata, ttl, "
                                       "negative_ttl, vary)"),
])
def test_bad_cache_sections(cache, message):
    text = doc(f"""
        - name: a
          match: https://a.example/
          cache: {cache}
    """)
    assert error(text) == f"rules/x.yaml:9: {message}"


# --------------------------------------------------------------------------------------
# Private packages


def test_private_patterns_parse():
    rs = parse(doc("""
        - name: npm
          match: https://registry.npmjs.org/
          private:
            - paths: ["/@corp/**", "re:/internal-.*"]
              registry: https://npm.corp.example/
            - {paths: ["/secret-*"]}
    """))
    first, second = rs.rules[0].private
    assert first.registry == Prefix("https", "npm.corp.example", 443, "")
    assert [p.text for p in first.paths] == ["/@corp/**", "re:/internal-.*"]
    assert second.registry is None
    # Matched as sent and percent-decoded: npm asks for a scoped packument as /@corp%2fname.
    assert first.matches("/@corp%2fname").text == "/@corp/**"
    assert first.matches("/@corp/name/-/name-1.0.0.tgz") is not None
    assert first.matches("/internal-tools") is not None
    assert first.matches("/@corpx/name") is None and second.matches("/secret") is None


@pytest.mark.parametrize("private, message", [
    ("private: /@corp/**", "rules/x.yaml:9: rules[0].private: expected a list, got str '/@corp/**'"),
    ("private: [{registry: 'https://p.example/'}]", "rules/x.yaml:9: rules[0].private[0].paths: missing required key"),
    ("private: [{paths: []}]", "rules/x.yaml:9: rules[0].private[0].paths: give at least one path pattern"),
    ("private: [{paths: ['@corp/*']}]",
     "rules/x.yaml:9: rules[0].private[0].paths[0]: '@corp/*' must be a path glob starting with '/' or 're:<regex>'"),
    ("private: [{paths: ['/@corp/**'], registry: 'https://a.example/'}]",
     "rules/x.yaml:9: rules[0].private[0].registry: https://a.example/ is the origin itself; "
     "leave registry out to mean the origin"),
    ("private: [{paths: ['/x'], scope: corp}]", "rules/x.yaml:9: rules[0].private[0].scope: unknown key"),
])
def test_bad_private_patterns(private, message):
    got = error(doc(f"""
        - name: a
          match: https://a.example/
          {private}
    """))
    assert got.startswith(message), got
