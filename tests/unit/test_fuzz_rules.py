"""Fuzzing the rules loader (docs/fuzzing.md).

Whatever text it is given, `parse_rules` either returns a RuleSet or raises RulesError
whose message starts with the file name and names a line of that file
("rules/fuzz.yaml:12: ..."). Hypothesis feeds it two kinds of text:

- the shipped rules/default.yaml, mutated: lines deleted, duplicated, swapped or
  re-indented, characters flipped, keys renamed, YAML oddities inserted, the text cut short;
- documents built from a strategy shaped like the schema, with any field replaced by
  values of the wrong type or hostile content (URLs with credentials or '..', regular
  expressions, huge numbers, deep nesting).

Every bug this found is fixed and pinned by a test of its own below (`FOUND` names
them); the property tests tolerate none of them. Case counts are printed
(-s) and written to fuzz-rules-summary.json in pytest's base temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorgate.protocols import KNOWN as KNOWN_PROTOCOLS
from mirrorgate.rules import RulesError, RuleSet, parse_rules

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEXT = (ROOT / "rules" / "default.yaml").read_text()
FILENAME = "rules/fuzz.yaml"
NAMES_A_LINE = re.compile(r"^rules/fuzz\.yaml:(\d+):")
EMPTY = f"{FILENAME}: the rules file is empty"  # there is no line to name

# Each target's example count; MIRRORGATE_FUZZ_EXAMPLES=N runs N per target instead.
SCALE = int(os.environ.get("MIRRORGATE_FUZZ_EXAMPLES") or 0)


def fuzz(examples: int):
    return settings(max_examples=SCALE or examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


FOUND = {
    "R1": "an integer longer than Python's 4300-digit limit (version, circuit.failures, fallback_on) "
          "escapes as a bare ValueError (test_a_huge_integer_is_a_rules_error)",
    "R2": "YAML nested a few hundred levels deep escapes as RecursionError "
          "(test_deep_nesting_is_a_rules_error)",
    "R3": "a 're:' pattern that re.compile rejects with OverflowError or RecursionError, not re.error, "
          "escapes (test_a_pathological_regex_is_a_rules_error)",
    "R4": "a character YAML does not allow (NUL, other C0 controls, DEL, a lone surrogate) gives "
          "'rules/fuzz.yaml: YAML error: ... position N', naming no line "
          "(test_an_unprintable_character_is_reported_with_its_line)",
    "R5": "a key holding a line break is echoed raw in 'unknown key' messages, so the one-line message "
          "spans several lines (test_a_key_with_a_line_break_keeps_the_message_on_one_line)",
}

SUMMARY: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def summary(tmp_path_factory):
    yield
    out = {"examples_per_target": SCALE or "defaults",
           "targets": {t: dict(sorted(c.items())) for t, c in sorted(SUMMARY.items())}}
    path = tmp_path_factory.getbasetemp() / "fuzz-rules-summary.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nrules fuzz summary ({path}):\n" + json.dumps(out, indent=2))


def check(text: str) -> str:
    """parse_rules' verdict on `text`, as a label for the summary; fails the test on any
    answer other than a RuleSet or a RulesError naming a line of the file."""
    try:
        result = parse_rules(text, FILENAME)
    except RulesError as e:
        message = str(e)
        if message == EMPTY:
            return "refused: empty"
        m = NAMES_A_LINE.match(message)
        assert m, f"the message names no line: {message!r}"
        assert 1 <= int(m.group(1)) <= text.count("\n") + 1, f"line {m.group(1)} is not in the file: {message!r}"
        assert "\n" not in message, f"a message of more than one line: {message!r}"
        return "refused: " + _problem(message)
    assert isinstance(result, RuleSet)
    return "accepted"


def _problem(message: str) -> str:
    """Where in the schema a message says the problem is, without the particulars:
    'rules[].cache.artifacts[]', 'profiles.*', 'YAML syntax error'."""
    rest = NAMES_A_LINE.sub("", message).strip()
    if "YAML syntax error" in rest:
        return "YAML syntax error"
    key, _, problem = rest.partition(": ")
    key = re.sub(r"\[\d+\]", "[]", key)
    key = re.sub(r"^(profiles|rules\[\]\.mirrors)\.[^.]+", r"\1.*", key)
    if problem.startswith("unknown key"):
        key = key.rpartition(".")[0] + ".<unknown key>" if "." in key else "<unknown key>"
    return key


# --------------------------------------------------------------------------------------
# 1. The shipped rules, mutated

KEYS = sorted({m.group(1) for m in re.finditer(r"^\s*-?\s*([a-z_]+):", DEFAULT_TEXT, re.MULTILINE)})
SNIPPETS = [
    "  - name: extra\n    match: https://extra.example/\n", "&a", "*a", "<<: *a", "!!binary aGk=",
    "? [complex, key]\n: value", "---", "...", "%YAML 1.1", "key: value\nkey: again", "- a\n- b",
    "x: " + "9" * 5000, "x: " + "[" * 500 + "]" * 500, "'unterminated", "\"esc\\x00ape\"", "\t", "\x00", "\x7f",
    "\ufeff", "\ud800", "é", "{a: 1, a: 2}", "[1, 2", "|\n  literal", ">\n  folded", "!!python/object:os.system",
    "match: http://user:pw@evil.example/", "match: https://x.example/../y/", "fallback_on: [7:00]",
    "cache: {artifacts: ['re:(']}", "timeouts: {connect: 0s}", "protocol: {name: npm, bogus: x}",
]
CHARS = list(":-# \t[]{}'\"&*!%@`|>,?\n\\") + ["\x00", "\x1b", "\x7f", "é", "\ufeff", "\u2028"]


@st.composite
def mutated_default(draw) -> tuple[str, list[str]]:
    lines = DEFAULT_TEXT.split("\n")
    done: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "flip", "rename", "insert",
                                     "truncate"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i: i + draw(st.integers(1, 5))]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip(" ")
        elif kind == "flip" and lines[i]:
            at = draw(st.integers(0, len(lines[i]) - 1))
            c = draw(st.one_of(st.sampled_from(CHARS), st.characters(codec="utf-8")))
            lines[i] = lines[i][:at] + c + lines[i][at + 1:]
        elif kind == "rename" and (keys := list(re.finditer(r"([a-z_]+):", lines[i]))):
            m = draw(st.sampled_from(keys))
            new = draw(st.one_of(st.sampled_from(KEYS), st.text(string.ascii_lowercase + "_", min_size=1, max_size=12),
                                 st.just(m.group(1)[:-1]), st.just(m.group(1).upper())))
            lines[i] = lines[i][: m.start(1)] + new + lines[i][m.end(1):]
        elif kind == "insert":
            lines.insert(i, draw(st.sampled_from(SNIPPETS)))
        elif kind == "truncate":
            lines = lines[:i] + [lines[i][: draw(st.integers(0, len(lines[i])))]]
        done.append(kind)
        if not lines:
            lines = [""]
    return "\n".join(lines), done


@fuzz(500)
@given(case=mutated_default())
def test_mutated_default_rules(case):
    text, _mutations = case  # (the mutations show in a failing example)
    verdict = check(text)
    SUMMARY["default.yaml mutated"]["cases"] += 1
    SUMMARY["default.yaml mutated"][verdict] += 1


# --------------------------------------------------------------------------------------
# 2. Documents shaped like the schema, with wrong types and hostile values

# Stands for an integer too long to print (Hypothesis shows its examples with repr()):
# replaced by 5000 digits once the document is YAML text.
HUGE_INT = "HUGEINT"

anything = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
              st.sampled_from([HUGE_INT, "9" * 400 + "s", "", " ", "~", "null", "yes", "0x1F4", "1_000", "7:00"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

GOOD_HOSTS = ["registry.example", "mirror.example", "127.0.0.1", "[::1]", "xn--e1afmkfd.example", "EXAMPLE.org"]
BAD_HOSTS = ["[::1", "", "a b", "user:pw@evil.example", "évil.example", "x.example:1:2"]
GOOD_PATHS = ["", "/", "/npm/", "/a/b", "/repository/pypi/simple/"]
BAD_PATHS = ["/a//b", "/./", "/../", "/a/..", "/%2e%2e/", "/a?x=1", "/a#f", "/é", "/a b", "?", "#"]


@st.composite
def urls(draw) -> str:
    """A URL prefix, valid three times in four; otherwise one part of it is wrong."""
    scheme, host, port, path = "https://", draw(st.sampled_from(GOOD_HOSTS)), "", draw(st.sampled_from(GOOD_PATHS))
    if draw(st.sampled_from([False] * 3 + [True])):
        part = draw(st.sampled_from(["scheme", "host", "port", "path", "text"]))
        if part == "scheme":
            scheme = draw(st.sampled_from(["http://", "ftp://", "", "https:/", "HTTPS://", "//", "javascript:"]))
        elif part == "host":
            host = draw(st.sampled_from(BAD_HOSTS))
        elif part == "port":
            port = draw(st.sampled_from([":443", ":0", ":65535", ":65536", ":99999999999999999999", ":x", ":-1", ":"]))
        elif part == "path":
            path = draw(st.sampled_from(BAD_PATHS))
        else:
            return draw(st.text(max_size=30))
    return f"{scheme}{host}{port}{path}"


paths = st.one_of(st.sampled_from(GOOD_PATHS[1:]), st.sampled_from(BAD_PATHS))
durations = st.one_of(st.sampled_from(["500ms", "3s", "2m", "1h", "0s", "-1s", "1.5s", "3 s", "3sec", "9" * 400,
                                       "1e3s", "inf", "nan"]), st.integers(-5, 10 ** 6), st.floats())
failures = st.one_of(st.sampled_from(["connect_error", "tls_error", "timeout", "protocol_error", "4xx", "5xx",
                                      "6xx", "404", "x", HUGE_INT]), st.integers(0, 1000))
patterns = st.one_of(st.sampled_from(["/**", "/*", "/a/*.tgz", "**", "re:.*", "re:(", "re:a{99999999999}",
                                      "re:" + "(" * 2000 + ")" * 2000, "re:(?P<x>a)(?P<x>b)", "re:[", "/a?b"]),
                     st.text(max_size=12).map(lambda s: "/" + s), st.text(max_size=12).map(lambda s: "re:" + s))


def sometimes(draw) -> bool:
    """True one time in eight. (sampled_from draws an index evenly, where one_of and
    booleans would follow Hypothesis's own preferences.)"""
    return draw(st.sampled_from([False] * 7 + [True]))


@st.composite
def maybe(draw, value_strategy):
    """Mostly a value of the right shape, sometimes anything at all."""
    return draw(anything) if sometimes(draw) else draw(value_strategy)


valid_names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}", fullmatch=True)


def rule(profile_names: list[str]) -> st.SearchStrategy[dict]:
    fields = {
        "name": maybe(valid_names),
        "match": maybe(st.one_of(urls(), st.lists(urls(), max_size=3))),
        "mirrors": maybe(st.dictionaries(st.sampled_from(profile_names + ["other"]), maybe(st.lists(urls(), max_size=3)),
                                         max_size=2)),
        "origin_only": maybe(st.lists(maybe(paths), max_size=3)),
        "fallback_on": maybe(st.lists(failures, max_size=4)),
        "timeouts": maybe(st.dictionaries(st.sampled_from(["connect", "first_byte", "idle", "other"]), durations,
                                          max_size=3)),
        "circuit": maybe(st.fixed_dictionaries({}, optional={"failures": maybe(st.integers(-1, 10)),
                                                             "cooldown": durations})),
        "cache": maybe(st.fixed_dictionaries({}, optional={
            "artifacts": maybe(st.lists(patterns, max_size=3)), "metadata": maybe(st.lists(patterns, max_size=3)),
            "ttl": durations, "negative_ttl": durations,
            "vary": maybe(st.lists(st.sampled_from(["Accept", "Bad Header", "", "X-é"]), max_size=2))})),
        "protocol": maybe(st.one_of(st.sampled_from(sorted(KNOWN_PROTOCOLS) + ["bogus"]),
                                    st.fixed_dictionaries({"name": st.sampled_from(sorted(KNOWN_PROTOCOLS))},
                                                          optional={"files": urls(), "index": urls(), "sumdb": urls(),
                                                                    "bogus": urls()}))),
        "private": maybe(st.lists(st.fixed_dictionaries({}, optional={"paths": maybe(st.lists(patterns, max_size=2)),
                                                                      "registry": urls()}), max_size=2)),
    }
    required = {k: fields[k] for k in ("name", "match")}
    optional = {k: v for k, v in fields.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def documents(draw) -> str:
    """Mostly well-formed at the top, so that most documents reach the rules; each field
    is sometimes of the wrong type, and sometimes a required key is missing."""
    profile_names = draw(st.lists(maybe(valid_names).filter(lambda n: isinstance(n, str)), min_size=1, max_size=3,
                                  unique=True))
    doc = {
        "version": draw(maybe(st.sampled_from([1] * 30 + [2, 0, "1", 1.0, HUGE_INT, True]))),
        "profiles": draw(maybe(st.fixed_dictionaries({n: maybe(st.text(max_size=20)) for n in profile_names}))),
        "default_profile": draw(maybe(st.sampled_from(profile_names))),
    }
    if draw(st.booleans()):
        doc["defaults"] = draw(maybe(st.fixed_dictionaries({}, optional={
            "timeouts": maybe(st.dictionaries(st.sampled_from(["connect", "first_byte", "idle"]), durations)),
            "fallback_on": maybe(st.lists(failures, max_size=4)),
            "circuit": maybe(st.dictionaries(st.sampled_from(["failures", "cooldown"]), anything)),
            "cache": maybe(st.dictionaries(st.sampled_from(["ttl", "negative_ttl"]), durations))})))
    doc["rules"] = draw(maybe(st.lists(maybe(rule(profile_names)), max_size=4)))
    if sometimes(draw):
        del doc[draw(st.sampled_from(sorted(doc)))]
    if sometimes(draw):
        doc[draw(st.text(max_size=8))] = draw(anything)
    text = yaml.safe_dump(doc, default_flow_style=draw(st.sampled_from([False, True, None])), allow_unicode=True,
                          sort_keys=False, width=draw(st.sampled_from([80, 10 ** 6])))
    return text.replace(HUGE_INT, "9" * 5000)


@fuzz(400)
@given(text=documents())
def test_schema_shaped_documents(text):
    verdict = check(text)
    SUMMARY["schema-shaped documents"]["cases"] += 1
    SUMMARY["schema-shaped documents"][verdict] += 1


# --------------------------------------------------------------------------------------
# Bugs this fuzzing found (all fixed since), each pinned by a test of its own.

MINIMAL = """\
version: 1
profiles: {cn: mirrors}
default_profile: cn
rules:
  - name: r
    match: https://registry.example/
"""


def refused_with_a_line(text: str, line: int) -> None:
    with pytest.raises(RulesError) as e:
        parse_rules(text, FILENAME)
    assert str(e.value).startswith(f"{FILENAME}:{line}: "), str(e.value)


@pytest.mark.parametrize("text, line", [
    (MINIMAL.replace("version: 1", "version: " + "1" * 5000), 1),
    (MINIMAL + "    circuit: {failures: " + "9" * 5000 + "}\n", 7),
    (MINIMAL + "    fallback_on: [" + "4" * 5000 + "]\n", 7),
], ids=["version", "circuit.failures", "fallback_on"])
def test_a_huge_integer_is_a_rules_error(text, line):
    refused_with_a_line(text, line)


@pytest.mark.parametrize("text, line", [
    (MINIMAL + "    origin_only: " + "[" * 3000 + "]" * 3000 + "\n", 7),
    ("[" * 100_000 + "]" * 100_000, 1),
    (MINIMAL + "".join("  " * (i + 2) + "k:\n" for i in range(3000)), 7),
], ids=["flow-in-a-rule", "flow-whole-file", "block"])
def test_deep_nesting_is_a_rules_error(text, line):
    with pytest.raises(RulesError) as e:
        parse_rules(text, FILENAME)
    assert NAMES_A_LINE.match(str(e.value)), str(e.value)


@pytest.mark.parametrize("pattern", ["re:a{99999999999}", "re:" + "(" * 2000 + ")" * 2000])
def test_a_pathological_regex_is_a_rules_error(pattern):
    refused_with_a_line(MINIMAL + f"    cache: {{artifacts: ['{pattern}']}}\n", 7)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x7f", "\ud800"], ids=["NUL", "SOH", "DEL", "surrogate"])
def test_an_unprintable_character_is_reported_with_its_line(char):
    refused_with_a_line(MINIMAL + f"    # a comment with {char} in it\n", 7)


def test_a_key_with_a_line_break_keeps_the_message_on_one_line():
    with pytest.raises(RulesError) as e:
        parse_rules(MINIMAL + '"bad\\nkey": 1\n', FILENAME)
    assert str(e.value).startswith(f"{FILENAME}:7: ") and "\n" not in str(e.value), repr(str(e.value))
