"""Loads the rules file and holds the active rule set and profile."""

from __future__ import annotations

import logging
from pathlib import Path

from mitmproxy import ctx, exceptions

from addons.options import add_option

from mirrorgate.rules import RuleSet, RulesError, load_rules

log = logging.getLogger("mirrorgate.rules")

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"


class Rules:
    def __init__(self) -> None:
        self.current: RuleSet | None = None
        self.profile = ""

    def load(self, loader) -> None:
        add_option(loader, "rules", str, str(DEFAULT_RULES), "Path of the Mirrorgate rules file (YAML).")
        add_option(loader, "profile", str, "",
                          "Rules profile that selects the mirror set, e.g. cn or direct. "
                          "Empty: the file's default_profile.")

    def configure(self, updated: set[str]) -> None:
        if not {"rules", "profile"} & updated:
            return
        try:
            ruleset = load_rules(ctx.options.rules)
        except RulesError as e:
            raise exceptions.OptionsError(f"invalid rules: {e}") from None
        profile = ctx.options.profile or ruleset.default_profile
        if profile not in ruleset.profiles:
            raise exceptions.OptionsError(
                f"profile {profile!r} is not declared in {ruleset.source} "
                f"(declared: {', '.join(ruleset.profiles)})")
        self.current, self.profile = ruleset, profile
        log.info("Rules: %d rules from %s, profile %s", len(ruleset.rules), ruleset.source, profile)

    def active(self) -> tuple[RuleSet, str]:
        assert self.current is not None, "rules are loaded at start-up"
        return self.current, self.profile
