"""Hot reload of the rules file: an edit takes effect without a restart and without
dropping a request; a bad edit leaves the rules in force and says exactly what is wrong.

The proxy checks the file every 50ms here (`rules_reload_interval`). Nothing waits on a
timer: each test waits, within WAIT, for the proxy's own log line that a reload happened.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mirrorgate.rules import RulesError, load_rules
from tests.e2e.test_fallback import header
from tests.support.fakes import WAIT
from tests.support.proxy import run_to_exit

pytestmark = pytest.mark.e2e

FAST = ("--set", "rules_reload_interval=50ms")
RELOADED = "Rules reloaded"
REFUSED = "Rules not reloaded (file changed), the previous rules stay in force: "


def rules_text(*rules: str, profiles: str = "test, direct", default: str = "test") -> str:
    """A rules file: profiles named in `profiles`, then the given rules (see `rule`)."""
    declared = "".join(f"  {name}: \"{name} profile\"\n" for name in profiles.split(", "))
    return (f"version: 1\nprofiles:\n{declared}default_profile: {default}\n"
            "defaults:\n  timeouts: {connect: 2s, first_byte: 30s, idle: 30s}\n"
            "rules:\n" + "".join(rules))


def rule(name: str, origin: str, mirrors: list[str], profile: str = "test") -> str:
    listed = "".join(f"        - {m}\n" for m in mirrors)
    return f"  - name: {name}\n    match: {origin}\n    mirrors:\n      {profile}:\n{listed}"


def rules_file(p) -> Path:
    """The rules file the proxy was started with."""
    [value] = [a.split("=", 1)[1] for a in p.proc.args if a.startswith("rules=")]
    return Path(value)


def replace_file(path: Path, text: str) -> None:
    """Save as editors and deploy tools do: write a new file, rename it over the old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for_line(p, text: str, after: int) -> str:
    """The first line of the proxy's output past line `after` that contains `text`."""
    deadline = time.monotonic() + WAIT
    while True:
        found = [line for line in p.output[after:] if text in line]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {text!r} in the proxy's output:\n" + p.text()
        time.sleep(0.02)


def edit(p, text: str, expect: str = RELOADED, *, in_place: bool = False) -> str:
    """Change the rules file and return the proxy's log line about it."""
    mark = len(p.output)
    if in_place:
        rules_file(p).write_text(text)
    else:
        replace_file(rules_file(p), text)
    return wait_for_line(p, expect, mark)


def fakes(fake):
    origin, m1, m2 = fake("origin", "127.0.0.2"), fake("mirror-1", "127.0.0.3"), fake("mirror-2", "127.0.0.4")
    for f in (origin, m1, m2):
        f.serve("/f", f.name.encode())
    return origin, m1, m2


def served_by(r) -> str:
    return header(r)["upstream"]


def test_a_changed_mirror_list_applies_to_the_next_request(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    c = client(p)
    assert c.get(origin.url + "f").content == b"mirror-1"

    # Saved in place, as some editors do (truncate, then write).
    line = edit(p, rules_text(rule("reg", origin.url, [m2.url])), in_place=True)

    assert line.endswith(f"Rules reloaded (file changed): 1 rules from {rules_file(p)}, profile test; changed reg")
    # The same client on its same connection: the rules are read per request.
    r = c.get(origin.url + "f")
    assert r.content == b"mirror-2" and served_by(r) == f"mirror:{m2.url}"
    assert (origin.count(), m1.count("/f"), m2.count("/f")) == (0, 1, 1)


def test_a_bad_edit_keeps_the_rules_in_force_and_logs_the_exact_error(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    c = client(p)
    path = rules_file(p)

    syntax = edit(p, "version: 1\nprofiles: {test: x\n", REFUSED)
    assert syntax.endswith(f"invalid rules: {path}:3:1: YAML syntax error: " + yaml_problem(path))
    assert c.get(origin.url + "f").content == b"mirror-1"

    unknown = edit(p, rules_text(rule("reg", origin.url, [m2.url]).replace("mirrors:", "mirors:")), REFUSED)
    expected = f"invalid rules: {path}:11: rules[0].mirors: unknown key (allowed: name, match, mirrors, "
    assert expected in unknown and unknown.endswith("; did you mean 'mirrors'?")
    assert unknown.endswith(f"invalid rules: {load_error(path)}")  # word for word what start-up says
    r = c.get(origin.url + "f")
    assert r.content == b"mirror-1" and served_by(r) == f"mirror:{m1.url}"

    edit(p, rules_text(rule("reg", origin.url, [m2.url])))
    assert c.get(origin.url + "f").content == b"mirror-2"
    # Each bad version is reported once, not at every check.
    assert sum("Rules not reloaded" in line for line in p.output) == 2
    assert "Traceback" not in p.text()


def yaml_problem(path: Path) -> str:
    return load_error(path).split("YAML syntax error: ", 1)[1]


def load_error(path: Path) -> str:
    with pytest.raises(RulesError) as e:
        load_rules(path)
    return str(e.value)


def test_a_file_briefly_missing_keeps_the_rules_and_its_return_is_picked_up(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    c = client(p)
    path = rules_file(p)
    aside = path.with_name("aside.yaml")

    mark = len(p.output)
    path.rename(aside)
    line = wait_for_line(p, REFUSED, mark)
    assert line.endswith(f"invalid rules: {path}: rules file not found")
    assert c.get(origin.url + "f").content == b"mirror-1"

    aside.write_text(rules_text(rule("reg", origin.url, [m2.url])))
    mark = len(p.output)
    aside.rename(path)
    wait_for_line(p, RELOADED, mark)
    assert c.get(origin.url + "f").content == b"mirror-2"


def test_reloads_under_load_drop_no_request(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    extra = fake("extra-origin", "127.0.0.7")
    held_gate, stalled_gate = m1.gate(), m1.gate()
    m1.two_halves("/held", b"first half|", b"second half", held_gate)
    m1.stall("/stalled", stalled_gate)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    # Rules that add and drop a host as well: the interception allowlist changes under load.
    versions = [
        rules_text(rule("reg", origin.url, [m2.url, m1.url]), rule("extra", extra.url, [])),
        rules_text(rule("reg", origin.url, [m1.url])),
        rules_text(rule("reg", origin.url, [m1.url, m2.url]), rule("extra", extra.url, [])),
        rules_text(rule("reg", origin.url, [m2.url])),
    ]

    done: list[tuple[int, bytes, str]] = []
    stop = threading.Event()

    def load() -> None:
        with client(p) as c:
            for _ in range(400):  # bounded, whatever happens to `stop`
                if stop.is_set():
                    return
                r = c.get(origin.url + "f")
                done.append((r.status_code, r.content, served_by(r)))

    with ThreadPoolExecutor(6) as pool:
        stalled = pool.submit(client(p).get, origin.url + "stalled")
        assert stalled_gate.reached.wait(WAIT), "the stalled request never reached the mirror"
        with client(p).stream("GET", origin.url + "held") as held:
            body = held.iter_raw()
            assert next(body) == b"first half|"
            workers = [pool.submit(load) for _ in range(4)]
            for text in versions:
                started = len(done)
                edit(p, text)
                wait_until(lambda: len(done) >= started + 10 or any(w.done() for w in workers), "requests to go on")
            stop.set()
            for w in workers:
                w.result(WAIT)  # re-raises any failed request
            held_gate.open()
            assert b"".join(body) == b"second half"
            assert served_by(held) == f"mirror:{m1.url}"
        stalled_gate.open()
        late = stalled.result(WAIT)

    assert late.status_code == 200 and late.text == "late\n" and served_by(late) == f"mirror:{m1.url}"
    assert len(done) >= 4 * 10
    upstream_of = {b"mirror-1": f"mirror:{m1.url}", b"mirror-2": f"mirror:{m2.url}"}
    failed = [d for d in done if d[0] != 200 or upstream_of.get(d[1]) != d[2]]
    assert not failed, failed[:5]
    assert {d[1] for d in done} == {b"mirror-1", b"mirror-2"}  # the reloads took effect under load
    assert sum(RELOADED in line for line in p.output) == len(versions)
    assert origin.count() == 0
    assert "Traceback" not in p.text() and "Rules not reloaded" not in p.text()
    r = client(p).get(origin.url + "f")
    assert r.content == b"mirror-2"


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_host_added_by_an_edit_is_intercepted_on_new_connections(fake, proxy, client):
    origin, m1, _ = fakes(fake)
    other, other_mirror = fake("other-origin", "127.0.0.5"), fake("other-mirror", "127.0.0.6")
    other.serve("/g", b"other origin")
    other_mirror.serve("/g", b"other mirror")
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    before = client(p)
    r = before.get(other.url + "g")
    assert r.content == b"other origin" and "x-mirrorgate" not in r.headers  # a raw tunnel

    line = edit(p, rules_text(rule("reg", origin.url, [m1.url]), rule("other", other.url, [other_mirror.url])))
    assert line.endswith("; added other")

    # mitmproxy decides per connection: the tunnel open before the edit stays a tunnel...
    r = before.get(other.url + "g")
    assert r.content == b"other origin" and "x-mirrorgate" not in r.headers
    # ...and a new connection is decrypted and routed by the new rule.
    r = client(p).get(other.url + "g")
    assert r.content == b"other mirror"
    assert header(r) == {"rule": "other", "upstream": f"mirror:{other_mirror.url}"}
    assert other.count("/g") == 2 and other_mirror.count("/g") == 1


def test_a_host_removed_by_an_edit_is_tunnelled_on_new_connections(fake, proxy, client):
    origin, m1, _ = fakes(fake)
    other, other_mirror = fake("other-origin", "127.0.0.5"), fake("other-mirror", "127.0.0.6")
    other.serve("/g", b"other origin")
    other_mirror.serve("/g", b"other mirror")
    p = proxy(rules_text(rule("reg", origin.url, [m1.url]), rule("other", other.url, [other_mirror.url])), *FAST)
    decrypted = client(p)
    assert decrypted.get(other.url + "g").content == b"other mirror"

    line = edit(p, rules_text(rule("reg", origin.url, [m1.url])))
    assert line.endswith("; removed other")

    # The connection decrypted before the edit stays decrypted, but no rule owns the
    # host any more: its requests go to the origin untouched.
    r = decrypted.get(other.url + "g")
    assert r.content == b"other origin" and "x-mirrorgate" not in r.headers
    # A client that never trusted the proxy's CA gets a raw tunnel to it now.
    r = client(p, trust_proxy_ca=False).get(other.url + "g")
    assert r.content == b"other origin"
    assert other_mirror.count("/g") == 1
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client(p, trust_proxy_ca=False).get(origin.url + "f")  # still a rule host


def test_a_reload_must_keep_the_profile_given_on_the_command_line(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST, "--set", "profile=test")
    c = client(p)
    path = rules_file(p)

    line = edit(p, rules_text(rule("reg", origin.url, [m2.url], profile="other"),
                              profiles="other, direct", default="other"), REFUSED)

    assert line.endswith(f"profile 'test' is not declared in {path} (declared: other, direct)")
    r = c.get(origin.url + "f")
    assert r.content == b"mirror-1" and served_by(r) == f"mirror:{m1.url}"


def test_without_a_profile_option_the_new_default_profile_applies(fake, proxy, client):
    origin, m1, _ = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), *FAST)
    c = client(p)
    assert c.get(origin.url + "f").content == b"mirror-1"

    line = edit(p, rules_text(rule("reg", origin.url, [m1.url]), default="direct"))

    assert line.endswith("profile direct; profile test -> direct")
    r = c.get(origin.url + "f")
    assert r.content == b"origin" and served_by(r) == f"origin:{origin.url}"


def test_sighup_reloads_when_checking_is_off(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), "--set", "rules_reload_interval=0")
    c = client(p)
    replace_file(rules_file(p), rules_text(rule("reg", origin.url, [m2.url])))
    assert c.get(origin.url + "f").content == b"mirror-1"  # nobody is watching

    mark = len(p.output)
    p.proc.send_signal(signal.SIGHUP)
    line = wait_for_line(p, RELOADED, mark)

    assert "Rules reloaded (SIGHUP): " in line and line.endswith("; changed reg")
    assert c.get(origin.url + "f").content == b"mirror-2"
    assert p.proc.poll() is None


def test_a_bad_reload_interval_stops_start_up(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(rule("reg", "https://127.0.0.2/", [])))

    out = run_to_exit(rules, tmp_path / "conf", "--set", "rules_reload_interval=often")

    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "mirrorgate: rules_reload_interval: 'often' is not an interval (examples: 1s, 250ms; 0 turns checking off)")


def test_post_rules_reload_reads_the_file_at_once_and_answers_with_the_error(fake, proxy, client):
    origin, m1, m2 = fakes(fake)
    p = proxy(rules_text(rule("reg", origin.url, [m1.url])), "--set", "rules_reload_interval=0")
    c = client(p)
    path = rules_file(p)
    replace_file(path, rules_text(rule("reg", origin.url, [m2.url]).replace("mirrors:", "mirors:")))

    r = c.post("http://mirrorgate/rules/reload")
    assert r.status_code == 422 and r.json()["error"] == f"invalid rules: {load_error(path)}"
    assert c.get(origin.url + "f").content == b"mirror-1"
    status = c.get("http://mirrorgate/status").text
    assert "The last edit of the rules was refused" in status and "mirors" in status

    replace_file(path, rules_text(rule("reg", origin.url, [m2.url])))
    r = c.post("http://mirrorgate/rules/reload")
    assert r.status_code == 200 and r.json() == {"reloaded": True, "rules": str(path), "count": 1, "profile": "test"}
    assert c.get(origin.url + "f").content == b"mirror-2"
    assert "refused" not in c.get("http://mirrorgate/status").text
    assert c.get("http://mirrorgate/rules/reload").status_code == 405
