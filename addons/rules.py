"""Loads the rules file, holds the active rule set and profile, and puts an edited rules
file in force without a restart.

Hot reload. While the proxy runs, the file named by the `rules` option is checked every
`rules_reload_interval` (default 1s; 0 turns checking off), and read again once it has
changed and then stayed the same for one interval (mirrorgate/reload.py). SIGHUP reads
it at once. A file that is valid, and declares the profile in use, replaces the rules in
force in one step on the event loop; one that is not leaves them in force and logs the
same `file:line: key: problem` message that start-up would have stopped with.

What a reload does and does not touch:

- A request keeps the rule it is served by to its end, so requests in flight (and the
  fills they started, which later requests for the same key join) finish as the old
  rules said; requests that arrive after the swap follow the new rules.
- Circuits are kept: they belong to a mirror URL, not to a rule, and take a changed
  `circuit` policy at their next use. Cached entries are kept: they are keyed by origin
  URL, and a changed `cache` policy (ttl, patterns) applies at their next lookup. Purge
  with `POST http://mirrorgate/cache/purge?prefix=…` to drop what a changed rule kept.
- The profile: `--set profile=NAME` must still be declared by the new file, or the
  reload is refused; with no profile set, the new file's `default_profile` applies.
- Interception (addons/interception.py) follows the new hosts; mitmproxy decides per
  connection, so a connection already open keeps the decision made when it opened.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.options import add_option
from mirrorgate.reload import ChangeWatch, FileStamp, describe_change, file_stamp, parse_interval
from mirrorgate.rules import RuleSet, RulesError, load_rules

log = logging.getLogger("mirrorgate.rules")

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"


def read_rules(path: str) -> tuple[FileStamp | None, RuleSet | RulesError]:
    """The file's stamp, taken before it is read, and what its text means or why it
    means nothing."""
    stamp = file_stamp(path)
    try:
        return stamp, load_rules(path)
    except RulesError as e:
        return stamp, e


def chosen_profile(ruleset: RuleSet, option: str) -> str:
    """The profile in force under `ruleset`: the option, else the file's default."""
    profile = option or ruleset.default_profile
    if profile not in ruleset.profiles:
        raise ValueError(f"profile {profile!r} is not declared in {ruleset.source} "
                         f"(declared: {', '.join(ruleset.profiles)})")
    return profile


def in_force(loaded: RuleSet | RulesError, profile_option: str) -> str:
    """The profile under which a freshly read rules file would be put in force, or the
    OptionsError (start-up and reloads alike) saying why it cannot be."""
    if isinstance(loaded, RulesError):
        raise exceptions.OptionsError(f"invalid rules: {loaded}")
    try:
        return chosen_profile(loaded, profile_option)
    except ValueError as e:
        raise exceptions.OptionsError(str(e)) from None


class Rules:
    def __init__(self) -> None:
        self.current: RuleSet | None = None
        self.profile = ""
        # What puts a reloaded rule set in force outside this addon (the interception
        # allowlist), called after the swap; raising OptionsError refuses the rule set.
        self.followers: list[Callable[[RuleSet], None]] = []
        self.interval = 0.0
        # For the status page and metrics: how reloads went, and why the last one failed
        # (None once a rules file was put in force after it).
        self.reloads = {"ok": 0, "refused": 0}
        self.last_error: str | None = None
        self._watch = ChangeWatch(None)
        # Counts rule sets put in force, so that a reload read before a newer one was put
        # in force by an option change is dropped rather than undoing it.
        self._generation = 0
        self._reloading = asyncio.Lock()
        self._poller: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running = False
        self._sighup = False

    def load(self, loader) -> None:
        add_option(loader, "rules", str, str(DEFAULT_RULES), "Path of the Mirrorgate rules file (YAML).")
        add_option(loader, "profile", str, "",
                          "Rules profile that selects the mirror set, e.g. cn or direct. "
                          "Empty: the file's default_profile.")
        add_option(loader, "rules_reload_interval", str, "1s",
                   "How often to check the rules file for changes, e.g. 1s or 250ms. A changed file is "
                   "put in force once it has stayed the same for one interval; an invalid one is "
                   "logged and the rules in force stay. 0 turns checking off (SIGHUP still reloads).")

    def configure(self, updated: set[str]) -> None:
        if "rules_reload_interval" in updated:
            try:
                interval = parse_interval(ctx.options.rules_reload_interval)
            except ValueError as e:
                raise exceptions.OptionsError(f"rules_reload_interval: {e}") from None
            if interval != self.interval:
                self.interval = interval
                self._restart_poller()
        if not {"rules", "profile"} & updated:
            return
        stamp, loaded = read_rules(ctx.options.rules)
        profile = in_force(loaded, ctx.options.profile)
        # The interception allowlist follows in Interception.configure, next in line.
        self.current, self.profile = loaded, profile
        self._generation += 1
        self.last_error = None
        self._watch = ChangeWatch(stamp)
        log.info("Rules: %d rules from %s, profile %s", len(loaded.rules), loaded.source, profile)

    def active(self) -> tuple[RuleSet, str]:
        assert self.current is not None, "rules are loaded at start-up"
        return self.current, self.profile

    # ---- hot reload ----------------------------------------------------------------------

    def running(self) -> None:
        self._running = True
        self._restart_poller()
        self._listen_for_sighup()

    def done(self) -> None:
        self._running = False
        self._restart_poller()
        for task in list(self._tasks):
            task.cancel()
        if self._sighup:
            self._sighup = False
            try:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            except RuntimeError:
                pass

    async def reload(self, trigger: str) -> str | None:
        """Read the rules file again and put it in force. On any problem the rules in
        force stay; the problem is logged and returned."""
        async with self._reloading:
            path, generation = ctx.options.rules, self._generation
            stamp, loaded = await asyncio.to_thread(read_rules, path)
            if generation != self._generation or path != ctx.options.rules:
                return None  # an option change put a newer rule set in force meanwhile
            self._watch.acted(stamp)
            try:
                self._swap(loaded, in_force(loaded, ctx.options.profile), trigger)
            except exceptions.OptionsError as e:
                log.error("Rules not reloaded (%s), the previous rules stay in force: %s", trigger, e)
                self.reloads["refused"] += 1
                self.last_error = str(e)
                return self.last_error
            self.reloads["ok"] += 1
            self.last_error = None
            return None

    def _swap(self, ruleset: RuleSet, profile: str, trigger: str) -> None:
        old, old_profile = self.active()
        self.current, self.profile = ruleset, profile
        try:
            for follow in self.followers:
                follow(ruleset)
        except exceptions.OptionsError:
            self.current, self.profile = old, old_profile
            for follow in self.followers:
                follow(old)
            raise
        self._generation += 1
        log.info("Rules reloaded (%s): %d rules from %s, profile %s; %s", trigger, len(ruleset.rules),
                 ruleset.source, profile, describe_change(old, old_profile, ruleset, profile))

    def _restart_poller(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._running and self.interval > 0:
            self._poller = asyncio.create_task(self._poll(self.interval), name="mirrorgate rules watch")

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                # A stat can hang on a network filesystem: never on the event loop.
                now = await asyncio.to_thread(file_stamp, ctx.options.rules)
                if self._watch.observe(now):
                    await self.reload("file changed")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Checking the rules file for changes failed; checking again in %gs", interval)

    def _listen_for_sighup(self) -> None:
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None:
            return  # Windows: edit the file instead
        if signal.getsignal(sighup) not in (signal.SIG_DFL, signal.SIG_IGN):
            log.info("SIGHUP has another handler; Mirrorgate reloads its rules only when the file changes")
            return
        try:
            asyncio.get_running_loop().add_signal_handler(sighup, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # no signals here (not the main thread, or a loop without them)
        self._sighup = True

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reading the rules again from %s", ctx.options.rules)
        task = asyncio.create_task(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
