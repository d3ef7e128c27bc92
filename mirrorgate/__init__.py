"""Mirrorgate: the core that the addons drive.

Pure decisions (rules, routing, circuit, trace) and the thin network edges (upstream,
relay). See docs/architecture.md.
"""
