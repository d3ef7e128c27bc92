"""The rules file: its schema, and the one place where it is validated.

A rules file is data (see rules/README.md). This module turns its text into a frozen
`RuleSet`, or raises `RulesError` with a message that names the file, the line and the
key. Nothing here touches the network; `load_rules` is the only function that reads a
file.

The YAML is walked as a node tree (``yaml.compose``) rather than loaded into dicts,
because only the nodes remember line numbers, and because PyYAML's dict loader keeps
the last of two duplicate keys without a word.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

import yaml

from mirrorgate.protocols import KNOWN as KNOWN_PROTOCOLS

SCHEMA_VERSION = 1

# Failure kinds an upstream can show before the client sees a byte. The names are the
# vocabulary of `fallback_on` in the rules file.
TRANSPORT_FAILURES = ("connect_error", "tls_error", "timeout", "protocol_error")
STATUS_CLASSES = ("4xx", "5xx")

BUILTIN_TIMEOUTS = {"connect": 5.0, "first_byte": 15.0, "idle": 60.0}
BUILTIN_FALLBACK_ON = ("connect_error", "tls_error", "timeout", "protocol_error", "5xx", "429")
BUILTIN_CIRCUIT = {"failures": 3, "cooldown": 30.0}
BUILTIN_CACHE_TTL = {"ttl": 300.0, "negative_ttl": 60.0}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class RulesError(ValueError):
    """A rules file is unusable. The message says where and why."""


@dataclass(frozen=True)
class Prefix:
    """A URL prefix: scheme, host, port and a path on segment boundaries.

    `path` never ends with "/" (the root is ""), so that mapping a request from one
    prefix to another is a plain concatenation of the remainder.
    """

    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"{self.origin}{self.path}/"

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}"

    def remainder(self, path: str) -> str | None:
        """The part of `path` below this prefix, or None if `path` is not under it."""
        if path == self.path:
            return ""
        if path.startswith(self.path + "/"):
            return path[len(self.path):]
        return None


@dataclass(frozen=True)
class Timeouts:
    connect: float
    first_byte: float
    idle: float


@dataclass(frozen=True)
class CircuitPolicy:
    failures: int
    cooldown: float


@dataclass(frozen=True)
class PathPattern:
    """A glob over the path below a rule's prefix ('*' within a segment, '**' across
    segments, '?' one character), or a regular expression written 're:…'. Either must
    match the whole path."""

    text: str
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def glob_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class CachePolicy:
    """Which responses of a rule are kept. Paths are matched below the rule's prefix;
    metadata patterns are tried before artifact patterns."""

    artifacts: tuple[PathPattern, ...]
    metadata: tuple[PathPattern, ...]
    ttl: float  # metadata is fresh this long, then revalidated
    negative_ttl: float  # an origin-confirmed 404 is remembered this long
    vary: tuple[str, ...]  # request headers (lowercase) that select a metadata representation


@dataclass(frozen=True)
class Private:
    """Paths below a rule's prefix that are private packages (an npm scope, a Go module
    prefix, a PyPI project): they go to `registry` (default: the origin), never to a
    mirror or the shared cache. Patterns match the path as sent and percent-decoded, so
    `/@corp/**` also covers npm's `/@corp%2fname`."""

    paths: tuple[PathPattern, ...]
    registry: Prefix | None = None

    def matches(self, path: str) -> PathPattern | None:
        decoded = unquote(path)
        return next((p for p in self.paths if p.matches(path) or p.matches(decoded)), None)


@dataclass(frozen=True)
class Rule:
    name: str
    match: tuple[Prefix, ...]
    mirrors: Mapping[str, tuple[Prefix, ...]]
    origin_only: tuple[str, ...]
    fallback_on: frozenset[str]
    timeouts: Timeouts
    circuit: CircuitPolicy
    where: str  # "file:line", for messages
    cache: CachePolicy | None = None
    protocol: str | None = None  # a name in mirrorgate.protocols.KNOWN
    protocol_options: Mapping[str, str] = field(default_factory=dict)
    private: tuple[Private, ...] = ()

    def mirrors_for(self, profile: str) -> tuple[Prefix, ...]:
        return self.mirrors.get(profile, ())


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    profiles: Mapping[str, str]
    default_profile: str
    source: str

    @cached_property
    def _by_authority(self) -> Mapping[tuple[str, str, int], tuple[tuple[Prefix, Rule], ...]]:
        index: dict[tuple[str, str, int], list[tuple[Prefix, Rule]]] = {}
        for rule in self.rules:
            for prefix in rule.match:
                index.setdefault((prefix.scheme, prefix.host, prefix.port), []).append((prefix, rule))
        # Longest path first, so that the most specific rule wins.
        return {k: tuple(sorted(v, key=lambda pr: -len(pr[0].path))) for k, v in index.items()}

    def lookup(self, scheme: str, host: str, port: int, path: str) -> tuple[Rule, Prefix] | None:
        """The rule whose match prefix is the longest one above `path`, if any."""
        for prefix, rule in self._by_authority.get((scheme, host.lower(), port), ()):
            if prefix.remainder(path) is not None:
                return rule, prefix
        return None

    def intercepted_authorities(self) -> list[tuple[str, int]]:
        """(host, port) pairs whose TLS must be decrypted: the https origins of all rules."""
        return sorted({(p.host, p.port) for r in self.rules for p in r.match if p.scheme == "https"})


# --------------------------------------------------------------------------------------
# Loading


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{name}: rules file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"{name}: cannot read rules file: {e}") from None
    return parse_rules(text, name)


def parse_rules(text: str, filename: str = "<rules>") -> RuleSet:
    try:
        if (mark := _too_deep(text)) is not None:
            raise RulesError(f"{filename}:{mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep")
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise RulesError(f"{where}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise RulesError(f"{filename}:{line}: character U+{code:04X} is not allowed in YAML") from None
    except yaml.YAMLError as e:
        raise RulesError(f"{filename}: YAML error: {e}") from None
    if not nodes or _is_null(nodes[0]):
        raise RulesError(f"{filename}: the rules file is empty")
    if len(nodes) > 1:
        raise RulesError(f"{filename}:{nodes[1].start_mark.line + 1}: only one YAML document is allowed")
    return _Parser(filename).ruleset(nodes[0])


# The composer recurses once per level; a rules file needs about six.
MAX_DEPTH = 64
_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
         yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _too_deep(text: str) -> yaml.Mark | None:
    """Where the YAML first nests deeper than MAX_DEPTH, or None. The scanner keeps a
    stack, not a call chain, so this is safe where composing would exhaust Python's."""
    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                return token.start_mark
        elif isinstance(token, _CLOSE):
            depth -= 1
    return None


@dataclass
class _Parser:
    filename: str
    _seen_match: dict[tuple[str, str, int, str], tuple[str, str]] = field(default_factory=dict)
    cache_ttl: dict[str, float] = field(default_factory=lambda: dict(BUILTIN_CACHE_TTL))

    # ---- node helpers ---------------------------------------------------------------

    def fail(self, node: yaml.Node, key: str, problem: str) -> RulesError:
        return RulesError(f"{self.filename}:{node.start_mark.line + 1}: {key or 'top level'}: {problem}")

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...] | None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, f"expected a mapping, got {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                raise self.fail(knode, key, f"keys must be plain strings, got {_kind(knode)}")
            k = knode.value
            shown = k if k.isprintable() else repr(k)  # one line, whatever the key holds
            sub = f"{key}.{shown}" if key else shown
            if k in out:
                raise self.fail(knode, sub, f"duplicate key (first given on line {out[k].start_mark.line + 1})")
            if allowed is not None and k not in allowed:
                hint = difflib.get_close_matches(k, allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                raise self.fail(knode, sub, f"unknown key (allowed: {', '.join(allowed)}){suggestion}")
            out[k] = vnode
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def string(self, node: yaml.Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str" or not node.value:
            raise self.fail(node, key, f"expected a non-empty string, got {_kind(node)}")
        return node.value

    def name(self, node: yaml.Node, key: str) -> str:
        value = self.string(node, key)
        if not _NAME_RE.match(value):
            raise self.fail(node, key, f"{value!r} is not a valid name (use lowercase letters, digits, '.', '_', '-')")
        return value

    def integer(self, node: yaml.Node, key: str, minimum: int) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            raise self.fail(node, key, f"expected an integer, got {_kind(node)}")
        value = self.int_value(node, key)
        if value < minimum:
            raise self.fail(node, key, f"must be at least {minimum}, got {value}")
        return value

    def int_value(self, node: yaml.ScalarNode, key: str) -> int:
        try:
            return _INT.construct_yaml_int(node)
        except ValueError:  # longer than Python will convert (4300 digits)
            raise self.fail(node, key, f"{node.value[:20]}… is too large a number") from None

    def duration(self, node: yaml.Node, key: str) -> float:
        """'500ms', '3s', '2m', '1h', or a bare number of seconds."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
            "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
        ):
            raise self.fail(node, key, f"expected a duration such as 500ms, 3s or 2m, got {_kind(node)}")
        m = _DURATION_RE.match(node.value)
        if not m:
            raise self.fail(node, key, f"{node.value!r} is not a duration (examples: 500ms, 3s, 2m)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if seconds <= 0:
            raise self.fail(node, key, "must be greater than zero")
        return seconds

    def prefix(self, node: yaml.Node, key: str) -> Prefix:
        value = self.string(node, key)
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as e:
            raise self.fail(node, key, f"{value!r} is not a valid URL: {e}") from None
        if parts.scheme not in ("http", "https"):
            raise self.fail(node, key, f"{value!r} is not an http:// or https:// URL")
        if not parts.hostname:
            raise self.fail(node, key, f"{value!r} has no host")
        if parts.username is not None or parts.password is not None:
            raise self.fail(node, key, f"{value!r} carries credentials; rules must not hold secrets")
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            raise self.fail(node, key, f"{value!r} must be a plain prefix, without '?' or '#'")
        path = parts.path
        if path and not path.startswith("/"):
            raise self.fail(node, key, f"{value!r} has a malformed path")
        segments = path.split("/")
        if any(s in (".", "..") for s in segments) or "//" in path.rstrip("/"):
            raise self.fail(node, key, f"{value!r} has empty, '.' or '..' path segments")
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        return Prefix(parts.scheme, parts.hostname.lower(), port, path.rstrip("/"))

    def fallback_on(self, node: yaml.Node, key: str) -> frozenset[str]:
        out: set[str] = set()
        allowed = ", ".join((*TRANSPORT_FAILURES, *STATUS_CLASSES)) + ", or a status code 400-599"
        for i, item in enumerate(self.sequence(node, key)):
            sub = f"{key}[{i}]"
            if isinstance(item, yaml.ScalarNode) and item.tag == "tag:yaml.org,2002:int":
                code = self.int_value(item, sub)
                if not 400 <= code <= 599:
                    raise self.fail(item, sub, f"status {code} is not an error status (400-599)")
                out.add(str(code))
            elif isinstance(item, yaml.ScalarNode) and item.value in (*TRANSPORT_FAILURES, *STATUS_CLASSES):
                out.add(item.value)
            else:
                shown = repr(item.value) if isinstance(item, yaml.ScalarNode) else _kind(item)
                raise self.fail(item, sub, f"{shown} is not a failure kind ({allowed})")
        return frozenset(out)

    def timeouts(self, node: yaml.Node, key: str, base: Timeouts) -> Timeouts:
        fields = self.mapping(node, key, ("connect", "first_byte", "idle"))
        values = {k: self.duration(v, f"{key}.{k}") for k, v in fields.items()}
        return Timeouts(**{**base.__dict__, **values})

    def circuit(self, node: yaml.Node, key: str, base: CircuitPolicy) -> CircuitPolicy:
        fields = self.mapping(node, key, ("failures", "cooldown"))
        values: dict[str, float | int] = {}
        if "failures" in fields:
            values["failures"] = self.integer(fields["failures"], f"{key}.failures", 1)
        if "cooldown" in fields:
            values["cooldown"] = self.duration(fields["cooldown"], f"{key}.cooldown")
        return CircuitPolicy(**{**base.__dict__, **values})

    # ---- the schema -----------------------------------------------------------------

    def ruleset(self, root: yaml.Node) -> RuleSet:
        top = self.mapping(root, "", ("version", "profiles", "default_profile", "defaults", "rules"))
        for required in ("version", "profiles", "default_profile", "rules"):
            if required not in top:
                raise self.fail(root, required, "missing required key")
        version = self.integer(top["version"], "version", 1)
        if version != SCHEMA_VERSION:
            raise self.fail(top["version"], "version", f"unsupported schema version {version} (this build reads {SCHEMA_VERSION})")

        profiles: dict[str, str] = {}
        for pname, pnode in self.mapping(top["profiles"], "profiles", None).items():
            key = f"profiles.{pname}"
            if not _NAME_RE.match(pname):
                raise self.fail(pnode, key, f"{pname!r} is not a valid profile name")
            if _is_null(pnode):
                profiles[pname] = ""
            elif isinstance(pnode, yaml.ScalarNode) and pnode.tag == "tag:yaml.org,2002:str":
                profiles[pname] = pnode.value
            else:
                raise self.fail(pnode, key, f"expected a description string, got {_kind(pnode)}")
        if not profiles:
            raise self.fail(top["profiles"], "profiles", "declare at least one profile")
        default_profile = self.string(top["default_profile"], "default_profile")
        if default_profile not in profiles:
            raise self.fail(top["default_profile"], "default_profile",
                            f"{default_profile!r} is not a declared profile ({', '.join(profiles)})")

        timeouts = Timeouts(**BUILTIN_TIMEOUTS)
        fallback = frozenset(BUILTIN_FALLBACK_ON)
        circuit = CircuitPolicy(**BUILTIN_CIRCUIT)  # type: ignore[arg-type]
        if "defaults" in top:
            d = self.mapping(top["defaults"], "defaults", ("timeouts", "fallback_on", "circuit", "cache"))
            if "timeouts" in d:
                timeouts = self.timeouts(d["timeouts"], "defaults.timeouts", timeouts)
            if "fallback_on" in d:
                fallback = self.fallback_on(d["fallback_on"], "defaults.fallback_on")
            if "circuit" in d:
                circuit = self.circuit(d["circuit"], "defaults.circuit", circuit)
            if "cache" in d:
                c = self.mapping(d["cache"], "defaults.cache", ("ttl", "negative_ttl"))
                self.cache_ttl = {**self.cache_ttl, **{k: self.duration(v, f"defaults.cache.{k}") for k, v in c.items()}}

        rules: list[Rule] = []
        names: dict[str, int] = {}
        for i, rnode in enumerate(self.sequence(top["rules"], "rules")):
            rule = self.rule(rnode, f"rules[{i}]", profiles, timeouts, fallback, circuit)
            if rule.name in names:
                raise self.fail(rnode, f"rules[{i}].name",
                                f"rule name {rule.name!r} is already used on line {names[rule.name]}")
            names[rule.name] = rnode.start_mark.line + 1
            rules.append(rule)
        return RuleSet(tuple(rules), MappingProxyType(profiles), default_profile, self.filename)

    def rule(self, node: yaml.Node, key: str, profiles: Mapping[str, str], timeouts: Timeouts,
             fallback: frozenset[str], circuit: CircuitPolicy) -> Rule:
        f = self.mapping(node, key, ("name", "match", "mirrors", "origin_only", "fallback_on", "timeouts", "circuit",
                                     "cache", "protocol", "private"))
        for required in ("name", "match"):
            if required not in f:
                raise self.fail(node, f"{key}.{required}", "missing required key")
        name = self.name(f["name"], f"{key}.name")

        mnode = f["match"]
        mnodes = self.sequence(mnode, f"{key}.match") if isinstance(mnode, yaml.SequenceNode) else [mnode]
        if not mnodes:
            raise self.fail(mnode, f"{key}.match", "give at least one URL prefix")
        match: list[Prefix] = []
        for j, n in enumerate(mnodes):
            sub = f"{key}.match" if len(mnodes) == 1 and not isinstance(mnode, yaml.SequenceNode) else f"{key}.match[{j}]"
            p = self.prefix(n, sub)
            ident = (p.scheme, p.host, p.port, p.path)
            if ident in self._seen_match:
                other_key, other_line = self._seen_match[ident]
                raise self.fail(n, sub, f"{p.url} is already matched by {other_key} (line {other_line})")
            self._seen_match[ident] = (sub, str(n.start_mark.line + 1))
            match.append(p)

        mirrors: dict[str, tuple[Prefix, ...]] = {}
        if "mirrors" in f:
            for pname, lnode in self.mapping(f["mirrors"], f"{key}.mirrors", None).items():
                pkey = f"{key}.mirrors.{pname}"
                if pname not in profiles:
                    raise self.fail(lnode, pkey, f"{pname!r} is not a declared profile ({', '.join(profiles)})")
                items = [] if _is_null(lnode) else self.sequence(lnode, pkey)
                plist: list[Prefix] = []
                for j, n in enumerate(items):
                    p = self.prefix(n, f"{pkey}[{j}]")
                    if p in match:
                        raise self.fail(n, f"{pkey}[{j}]", f"{p.url} is the origin itself, not a mirror")
                    if p in plist:
                        raise self.fail(n, f"{pkey}[{j}]", f"{p.url} is listed twice")
                    plist.append(p)
                mirrors[pname] = tuple(plist)

        origin_only: list[str] = []
        if "origin_only" in f:
            for j, n in enumerate(self.sequence(f["origin_only"], f"{key}.origin_only")):
                path = self.string(n, f"{key}.origin_only[{j}]")
                if not path.startswith("/") or any(c in path for c in "?#"):
                    raise self.fail(n, f"{key}.origin_only[{j}]", f"{path!r} must be a path starting with '/'")
                origin_only.append(path.rstrip("/"))

        return Rule(
            name=name,
            match=tuple(match),
            mirrors=MappingProxyType(mirrors),
            origin_only=tuple(origin_only),
            fallback_on=self.fallback_on(f["fallback_on"], f"{key}.fallback_on") if "fallback_on" in f else fallback,
            timeouts=self.timeouts(f["timeouts"], f"{key}.timeouts", timeouts) if "timeouts" in f else timeouts,
            circuit=self.circuit(f["circuit"], f"{key}.circuit", circuit) if "circuit" in f else circuit,
            where=f"{self.filename}:{node.start_mark.line + 1}",
            cache=self.cache(f["cache"], f"{key}.cache") if "cache" in f else None,
            **(self.protocol(f["protocol"], f"{key}.protocol") if "protocol" in f else {}),
            private=self.private(f["private"], f"{key}.private", match) if "private" in f else (),
        )

    def private(self, node: yaml.Node, key: str, match: list[Prefix]) -> tuple[Private, ...]:
        """`private: [{paths: [/@corp/**], registry: https://npm.corp.example/}, …]`."""
        out = []
        for j, n in enumerate(self.sequence(node, key)):
            f = self.mapping(n, f"{key}[{j}]", ("paths", "registry"))
            if "paths" not in f:
                raise self.fail(n, f"{key}[{j}].paths", "missing required key")
            paths = self.patterns(f["paths"], f"{key}[{j}].paths")
            if not paths:
                raise self.fail(f["paths"], f"{key}[{j}].paths", "give at least one path pattern")
            registry = self.prefix(f["registry"], f"{key}[{j}].registry") if "registry" in f else None
            if registry is not None and registry in match:
                raise self.fail(f["registry"], f"{key}[{j}].registry",
                                f"{registry.url} is the origin itself; leave registry out to mean the origin")
            out.append(Private(paths, registry))
        return tuple(out)

    def protocol(self, node: yaml.Node, key: str) -> dict:
        """`protocol: npm`, or `protocol: {name: pypi-simple, files: https://…/packages/}`."""
        if isinstance(node, yaml.MappingNode):
            fields = self.mapping(node, key, None)
            if "name" not in fields:
                raise self.fail(node, f"{key}.name", "missing required key")
            name_node = fields.pop("name")
        else:
            fields, name_node = {}, node
        name = self.string(name_node, f"{key}.name" if fields or isinstance(node, yaml.MappingNode) else key)
        if name not in KNOWN_PROTOCOLS:
            raise self.fail(name_node, key, f"unknown protocol {name!r} (known: {', '.join(KNOWN_PROTOCOLS)})")
        options = {}
        for opt, vnode in fields.items():
            if opt not in KNOWN_PROTOCOLS[name]:
                allowed = ", ".join(("name", *KNOWN_PROTOCOLS[name]))
                raise self.fail(vnode, f"{key}.{opt}", f"unknown key for protocol {name} (allowed: {allowed})")
            options[opt] = self.prefix(vnode, f"{key}.{opt}").url
        return {"protocol": name, "protocol_options": MappingProxyType(options)}

    def cache(self, node: yaml.Node, key: str) -> CachePolicy:
        f = self.mapping(node, key, ("artifacts", "metadata", "ttl", "negative_ttl", "vary"))
        if "artifacts" not in f and "metadata" not in f:
            raise self.fail(node, key, "name at least one of artifacts or metadata")
        ttl = {**self.cache_ttl, **{k: self.duration(f[k], f"{key}.{k}") for k in ("ttl", "negative_ttl") if k in f}}
        vary: list[str] = []
        for j, n in enumerate(self.sequence(f["vary"], f"{key}.vary") if "vary" in f else []):
            name = self.string(n, f"{key}.vary[{j}]")
            if not _HEADER_NAME_RE.match(name):
                raise self.fail(n, f"{key}.vary[{j}]", f"{name!r} is not a header name")
            vary.append(name.lower())
        return CachePolicy(
            artifacts=self.patterns(f.get("artifacts"), f"{key}.artifacts"),
            metadata=self.patterns(f.get("metadata"), f"{key}.metadata"),
            ttl=ttl["ttl"], negative_ttl=ttl["negative_ttl"], vary=tuple(vary))

    def patterns(self, node: yaml.Node | None, key: str) -> tuple[PathPattern, ...]:
        if node is None:
            return ()
        out = []
        for j, n in enumerate(self.sequence(node, key)):
            text = self.string(n, f"{key}[{j}]")
            if text.startswith("re:"):
                try:
                    regex = re.compile(text[3:])
                except (re.error, OverflowError, RecursionError) as e:
                    raise self.fail(n, f"{key}[{j}]", f"{text[3:]!r} is not a valid regular expression: {e}") from None
            elif text.startswith("/"):
                regex = re.compile(glob_regex(text))
            else:
                raise self.fail(n, f"{key}[{j}]", f"{text!r} must be a path glob starting with '/' or 're:<regex>'")
            out.append(PathPattern(text, regex))
        return tuple(out)


# YAML 1.1 integers come in several spellings (0x1F4, 010, 1_000); let PyYAML read them.
_INT = yaml.constructor.SafeConstructor()


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return f"{tag} {node.value!r}" if node.value != "" else "nothing"
