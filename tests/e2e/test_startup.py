"""Start-up as a user meets it: bad rules stop the proxy with one clear line."""

from __future__ import annotations

import pytest

from tests.support.proxy import ROOT, run_to_exit

pytestmark = pytest.mark.e2e


def test_a_bad_rules_file_stops_start_up_naming_file_line_and_key(tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("version: 1\nprofiles: {cn: x}\ndefault_profile: cn\nrules:\n"
                     "  - name: npm\n    match: https://registry.npmjs.org/\n"
                     "    mirrors:\n      cn: [ftp://mirror.example/npm/]\n")

    out = run_to_exit(rules, tmp_path / "conf")

    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"mirrorgate: invalid rules: {rules}:8: rules[0].mirrors.cn[0]: "
        "'ftp://mirror.example/npm/' is not an http:// or https:// URL")
    assert "Traceback" not in out.stdout + out.stderr


def test_a_yaml_syntax_error_names_line_and_column(tmp_path):
    rules = tmp_path / "broken.yaml"
    rules.write_text("version: 1\nprofiles: {cn: x\n")

    out = run_to_exit(rules, tmp_path / "conf")

    assert out.returncode == 1
    assert f"mirrorgate: invalid rules: {rules}:3:1: YAML syntax error: " in out.stderr


def test_an_unknown_profile_stops_start_up(tmp_path):
    out = run_to_exit(ROOT / "rules" / "default.yaml", tmp_path / "conf", "--set", "profile=moon")

    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"mirrorgate: profile 'moon' is not declared in {ROOT / 'rules' / 'default.yaml'} (declared: cn, direct)")


def test_the_default_rules_start_and_print_what_a_user_needs(proxy):
    p = proxy((ROOT / "rules" / "default.yaml").read_text())
    text = p.text()
    assert f"CA certificate (trust it in clients): {p.ca}" in text
    assert f"export HTTPS_PROXY=http://127.0.0.1:{p.port}" in text
    bundle = p.confdir / "mirrorgate-ca-bundle.pem"
    assert bundle.read_text().endswith(p.ca.read_text())


def test_a_second_process_on_one_cache_dir_refuses_to_start(proxy, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text((ROOT / "rules" / "default.yaml").read_text())
    p = proxy(rules.read_text(), cache_dir=rules.with_suffix(".cache"))  # the one run_to_exit gives

    out = run_to_exit(rules, tmp_path / "conf2")

    assert out.returncode != 0
    assert f"another Mirrorgate process (pid {p.proc.pid}) is using it" in out.stdout + out.stderr
    assert p.proc.poll() is None  # the first one serves on
