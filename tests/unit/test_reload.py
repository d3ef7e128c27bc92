"""Hot reload of the rules file, without sockets: when a changed file is read, what a
reload reports, and how the Rules and Interception addons swap rule sets (in mitmproxy's
test context)."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from addons.interception import Interception, allow_patterns
from addons.rules import Rules, chosen_profile
from mirrorgate.reload import ChangeWatch, FileStamp, describe_change, file_stamp, parse_interval
from mirrorgate.rules import parse_rules


# --------------------------------------------------------------------------------------
# The interval option


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("250ms", 0.25), ("2m", 120.0), ("3", 3.0),
                                            ("0", 0.0), ("0s", 0.0), (" 1.5 s ", 1.5), ("10ms", 0.01)])
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text, message", [
    ("often", "'often' is not an interval (examples: 1s, 250ms; 0 turns checking off)"),
    ("-1s", "'-1s' is not an interval (examples: 1s, 250ms; 0 turns checking off)"),
    ("1h", "'1h' is not an interval (examples: 1s, 250ms; 0 turns checking off)"),
    ("1ms", "'1ms' is too short: use 0 (off) or at least 10ms"),
])
def test_bad_intervals_say_why(text, message):
    with pytest.raises(ValueError) as e:
        parse_interval(text)
    assert str(e.value) == message


# --------------------------------------------------------------------------------------
# Stamps and when a changed file is due


def stamp(n: int) -> FileStamp:
    return FileStamp(mtime_ns=n, size=100, inode=7, device=1)


def test_an_unchanged_file_is_never_due():
    watch = ChangeWatch(stamp(1))
    assert [watch.observe(stamp(1)) for _ in range(3)] == [False, False, False]


def test_a_change_is_due_once_it_stayed_the_same_for_one_poll():
    watch = ChangeWatch(stamp(1))
    assert watch.observe(stamp(2)) is False  # maybe still being written
    assert watch.observe(stamp(2)) is True


def test_a_file_still_changing_is_not_due():
    watch = ChangeWatch(stamp(1))
    assert [watch.observe(stamp(n)) for n in (2, 3, 4, 4)] == [False, False, False, True]


def test_a_version_acted_on_is_not_due_again():
    watch = ChangeWatch(stamp(1))
    watch.observe(stamp(2))
    assert watch.observe(stamp(2)) is True
    watch.acted(stamp(2))  # loaded, or rejected and logged
    assert [watch.observe(stamp(2)) for _ in range(3)] == [False, False, False]
    assert [watch.observe(stamp(3)), watch.observe(stamp(3))] == [False, True]


def test_a_file_missing_for_a_moment_is_not_due():
    watch = ChangeWatch(stamp(1))
    assert [watch.observe(None), watch.observe(stamp(1)), watch.observe(stamp(1))] == [False, False, False]


def test_a_file_missing_for_two_polls_is_due_so_the_reader_can_say_so():
    watch = ChangeWatch(stamp(1))
    assert [watch.observe(None), watch.observe(None)] == [False, True]
    watch.acted(None)
    assert watch.observe(None) is False
    assert [watch.observe(stamp(5)), watch.observe(stamp(5))] == [False, True]


def test_going_back_to_the_version_acted_on_is_no_change():
    watch = ChangeWatch(stamp(1))
    assert [watch.observe(stamp(2)), watch.observe(stamp(1)), watch.observe(stamp(2))] == [False, False, False]


def test_the_stamp_of_a_missing_file_is_none(tmp_path):
    assert file_stamp(tmp_path / "nothing.yaml") is None


def test_replacing_a_file_by_rename_changes_its_stamp_even_with_the_same_size_and_time(tmp_path):
    path, new = tmp_path / "rules.yaml", tmp_path / "rules.yaml.new"
    path.write_text("version: 1\n")
    new.write_text("version: 2\n")
    st = os.stat(path)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = file_stamp(path)

    os.replace(new, path)

    after = file_stamp(path)
    assert after is not None and before is not None
    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns)
    assert after != before  # the inode tells them apart


def test_writing_in_place_changes_the_stamp(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\n")
    before = file_stamp(path)
    path.write_text("version: 1\n# more\n")
    assert file_stamp(path) != before


# --------------------------------------------------------------------------------------
# What a reload reports

HEAD = "version: 1\nprofiles: {test: fakes, direct: origins}\ndefault_profile: test\nrules:\n"


def ruleset(body: str, head: str = HEAD):
    return parse_rules(head + textwrap.dedent(body), "rules.yaml")


NPM = """\
- name: npm
  match: https://registry.npmjs.org/
  mirrors: {test: [https://npm.mirror.example/]}
"""
PYPI = """\
- name: pypi
  match: https://pypi.org/
"""


def test_describe_change_names_added_removed_and_changed_rules():
    old = ruleset(NPM + PYPI)
    new = ruleset(NPM.replace("npm.mirror", "other.mirror") + "- name: crates\n  match: https://index.crates.io/\n")
    assert describe_change(old, "test", new, "test") == "added crates; removed pypi; changed npm"


def test_a_rule_that_only_moved_in_the_file_is_unchanged():
    old = ruleset(NPM + PYPI)
    new = ruleset(PYPI + "\n\n" + NPM)
    assert old.rules[0].where != new.rules[1].where
    assert describe_change(old, "test", new, "test") == "no rule changed"


def test_describe_change_names_a_new_profile():
    rules = ruleset(NPM)
    assert describe_change(rules, "test", rules, "direct") == "profile test -> direct"


def test_the_profile_option_wins_over_the_default_and_must_be_declared():
    rules = ruleset(NPM)
    assert chosen_profile(rules, "") == "test"
    assert chosen_profile(rules, "direct") == "direct"
    with pytest.raises(ValueError) as e:
        chosen_profile(rules, "moon")
    assert str(e.value) == "profile 'moon' is not declared in rules.yaml (declared: test, direct)"


# --------------------------------------------------------------------------------------
# The addons swapping rule sets, in mitmproxy's test context (no proxy, no sockets)


class RefuseHost:
    """An addon that refuses an allow_hosts naming `host`, as any addon may refuse an option."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.refused = 0

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx
        if "allow_hosts" in updated and any(self.host in p for p in ctx.options.allow_hosts):
            self.refused += 1
            raise exceptions.OptionsError(f"allow_hosts: {self.host} is not welcome")


def write(path: Path, body: str, head: str = HEAD) -> None:
    path.write_text(head + textwrap.dedent(body))


def run(coro_fn):
    """Run `coro_fn(rules, interception, tctx, path)` in mitmproxy's test context, with
    npm's rules loaded from a file of their own."""
    async def main(path: Path):
        rules = Rules()
        interception = Interception(rules)
        # mitmproxy's own addons that declare and read allow_hosts and connection_strategy.
        with taddons.context(Proxyserver(), NextLayer(), rules, interception) as tctx:
            write(path, NPM)
            tctx.configure(rules, rules=str(path))
            return await coro_fn(rules, interception, tctx, path)
    return main


@pytest.fixture
def rules_path(tmp_path):
    return tmp_path / "rules.yaml"


def test_a_reload_swaps_the_rules_and_the_intercepted_hosts(rules_path):
    async def body(rules, interception, tctx, path):
        write(path, NPM + PYPI)
        assert await rules.reload("test") is None
        ruleset, profile = rules.active()
        assert [r.name for r in ruleset.rules] == ["npm", "pypi"] and profile == "test"
        assert list(tctx.options.allow_hosts) == allow_patterns([("pypi.org", 443), ("registry.npmjs.org", 443)])
    asyncio.run(run(body)(rules_path))


def test_a_bad_file_leaves_rules_and_intercepted_hosts_as_they_were(rules_path):
    async def body(rules, interception, tctx, path):
        before, hosts = rules.active(), list(tctx.options.allow_hosts)
        write(path, NPM + PYPI + "  mirors: {}\n")
        error = await rules.reload("test")
        assert error == (f"invalid rules: {path}:10: rules[1].mirors: unknown key (allowed: "
                         + error.split("(allowed: ", 1)[1])
        assert error.endswith("did you mean 'mirrors'?")
        assert rules.active() == before and list(tctx.options.allow_hosts) == hosts
        assert (rules.reloads, rules.last_error) == ({"ok": 0, "refused": 1}, error)

        write(path, NPM + PYPI)  # fixed
        assert await rules.reload("test") is None
        assert (rules.reloads, rules.last_error) == ({"ok": 1, "refused": 1}, None)
    asyncio.run(run(body)(rules_path))


def test_a_reload_must_keep_the_profile_option_declared(rules_path):
    async def body(rules, interception, tctx, path):
        tctx.configure(rules, profile="direct")
        before = rules.active()
        write(path, NPM, head=HEAD.replace("direct: origins", "local: origins"))
        error = await rules.reload("test")
        assert error == f"profile 'direct' is not declared in {path} (declared: test, local)"
        assert rules.active() == before
    asyncio.run(run(body)(rules_path))


def test_a_refused_allowlist_undoes_the_swap_without_looping(rules_path):
    async def body(rules, interception, tctx, path):
        refuse = RefuseHost("pypi")
        tctx.master.addons.add(refuse)
        before, hosts = rules.active(), list(tctx.options.allow_hosts)
        write(path, NPM + PYPI)
        error = await rules.reload("test")
        assert error == "allow_hosts: pypi is not welcome"
        assert rules.active() == before
        assert list(tctx.options.allow_hosts) == hosts
        assert refuse.refused == 1  # mitmproxy's rollback did not make Interception try again
    asyncio.run(run(body)(rules_path))


def test_a_reload_read_before_an_option_change_does_not_undo_it(rules_path, tmp_path):
    async def body(rules, interception, tctx, path):
        other = tmp_path / "other.yaml"
        write(other, PYPI)
        write(path, NPM + PYPI)
        reading = asyncio.create_task(rules.reload("test"))
        await asyncio.sleep(0)  # the reload is reading the old path in its thread
        tctx.configure(rules, rules=str(other))
        assert await reading is None
        assert [r.name for r in rules.active()[0].rules] == ["pypi"]
    asyncio.run(run(body)(rules_path))


def test_the_watch_follows_the_file_the_options_name(rules_path, tmp_path):
    async def body(rules, interception, tctx, path):
        other = tmp_path / "other.yaml"
        write(other, PYPI)
        tctx.configure(rules, rules=str(other))
        # The version just loaded is not due: it is the one acted on.
        now = file_stamp(other)
        assert [rules._watch.observe(now), rules._watch.observe(now)] == [False, False]
    asyncio.run(run(body)(rules_path))


def test_the_interval_option_is_validated(rules_path):
    async def body(rules, interception, tctx, path):
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(rules, rules_reload_interval="1ms")
        assert str(e.value) == "rules_reload_interval: '1ms' is too short: use 0 (off) or at least 10ms"
        tctx.configure(rules, rules_reload_interval="250ms")
        assert rules.interval == 0.25
    asyncio.run(run(body)(rules_path))
