"""Every VIEN_* variable is declared once (vien.runtime.env) with type, range and meaning; a bad value stops a
service at start naming the variable and what is allowed; the README's table is the declaration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vien.runtime import env
from vien.runtime.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]
# VIEN_-prefixed names that are not vien's settings: a constant, and the example secret variables that the shipped
# profiles/values files name in `api_key_env` / `key_env` (the operator chooses those names)
NOT_VARIABLES = {"VIEN_POINT_NAMESPACE", "VIEN_VLLM_API_KEY", "VIEN_ACME_API_KEY"}


def _names_in_code() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    # the code, and what the chart and compose set: a variable nobody reads is a silent no-op for an operator
    paths = [p for top in ("services", "bench", "deploy", "helm") for pat in ("*.py", "*.yaml", "*.tpl")
             for p in (ROOT / top).rglob(pat)]
    for path in paths:
        if "/v1/" in str(path):
            continue
        for m in re.finditer(r"\bVIEN_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")):
            found.setdefault(m.group(0), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_vien_variable_read_by_code_is_declared() -> None:
    names = _names_in_code()
    undeclared = {n: sorted(set(p)) for n, p in names.items() if n not in env.VARS and n not in NOT_VARIABLES}
    assert not undeclared, f"declare these in services/vien/runtime/env.py: {undeclared}"


def test_the_readme_settings_table_is_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert env.markdown_table() in readme, "regenerate the README table: python -m vien.runtime.env"


@pytest.mark.parametrize("var", [v for v in env.VARS.values() if v.kind in ("int", "float")], ids=lambda v: v.name)
def test_a_number_out_of_range_names_the_variable_and_the_range(var: env.Var) -> None:
    assert var.lo is not None and var.hi is not None
    what = "an integer" if var.kind == "int" else "a number"
    for bad in (str(var.lo - 1), str(var.hi + 1), "many", "nan"):
        with pytest.raises(env.EnvError, match=rf"^{var.name}=.*must be {what} in {var.lo}\.\.{var.hi}$"):
            env.get(var.name, {var.name: bad})
    assert env.get(var.name, {var.name: str(var.lo)}) == var.lo
    assert env.get(var.name, {}) == var.default


def test_settings_from_env_fails_fast_and_reads_every_field() -> None:
    with pytest.raises(ConfigError, match=r"VIEN_QUERY_MAX_BATCH='0': must be an integer in 1\.\.1024"):
        Settings.from_env({"VIEN_QUERY_MAX_BATCH": "0"})
    with pytest.raises(ConfigError, match="VIEN_LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR"):
        Settings.from_env({"VIEN_LOG_LEVEL": "loud"})
    s = Settings.from_env({"VIEN_QUERY_MAX_BATCH": "8", "VIEN_TLS_CLIENT_AUTH": "required", "VIEN_REDIS_URL": " ",
                           "VIEN_MODELS_DIR": "/tmp/m", "VIEN_LOG_LEVEL": "debug"})
    assert (s.query_max_batch, s.tls_client_auth, s.redis_url, s.models_dir, s.log_level) == (
        8, True, None, Path("/tmp/m"), "DEBUG")
    assert Settings.from_env({}) == Settings()  # the declared defaults are the dataclass's


def test_a_secret_is_never_echoed() -> None:
    with pytest.raises(env.EnvError) as e:
        env.Var("VIEN_X", "int", 0, "x", lo=0, hi=1, secret=True).parse("sk-123")
    assert "sk-123" not in str(e.value) and "<redacted>" in str(e.value)


@pytest.mark.parametrize(("var", "value", "allowed"), [("VIEN_QUERY_MAX_BATCH", "0", "1..1024"),
                                                       ("VIEN_MAX_MESSAGE_BYTES", "-1", "1024..2147483647")])
def test_a_service_with_a_bad_setting_stops_at_start_naming_it(var: str, value: str, allowed: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "vien_tools", "serve", "router", "--port", "0"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, var: value, "VIEN_TRACING": "0"})
    assert proc.returncode != 0
    assert var in proc.stderr and allowed in proc.stderr, proc.stderr[-2000:]
