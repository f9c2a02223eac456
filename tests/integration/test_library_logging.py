"""The library never writes logs to stdout (issue 16): with no logging configured by
the application, ``Vault.init``/``open`` print nothing on stdout and only warnings on
stderr; an application's stdlib logging or structlog configuration receives the events."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from structlog.testing import capture_logs

from vault import Vault, VaultSettings
from vault.logging import get_logger

from ..conftest import POLICIES

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in list(env):
        if name.startswith("VAULT_"):
            del env[name]
    script = textwrap.dedent(f"""
        from pathlib import Path
        from vault import Vault, VaultSettings
        settings = VaultSettings.build(home=Path({str(tmp_path / 'v')!r}),
                                       policies=Path({str(POLICIES)!r}))
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_init_and_open_print_nothing_on_stdout(tmp_path: Path) -> None:
    """No configuration: stdout is empty and stderr holds no debug or info lines."""
    done = _python("""
        with Vault.init(settings=settings):
            pass
        with Vault.open(settings=settings) as v:
            v.roles.assign("sam", "support_agent", tenant="acme")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "policy_loaded" not in done.stderr and "config_recorded" not in done.stderr


def test_a_warning_goes_to_stderr_and_stdlib_logging_gets_the_rest(tmp_path: Path) -> None:
    """Unconfigured, a warning reaches stderr (Python's last-resort handler); with
    ``logging.basicConfig`` at INFO the application sees Vault's info events, redacted."""
    done = _python("""
        from vault.logging import get_logger
        get_logger("vault.test").warning("something_odd", email="ana@example.com", n=2)
    """, tmp_path)
    assert done.stdout == ""
    assert "something_odd" in done.stderr and "n=2" in done.stderr
    assert "ana@example.com" not in done.stderr and "[secure]" in done.stderr
    done = _python("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
        with Vault.init(settings=settings):
            pass
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "vault.policy.engine policy_defaults_loaded rules=" in done.stderr


def test_capture_logs_still_sees_the_library_events(tmp_path: Path) -> None:
    """A configured structlog (here ``capture_logs``) receives the events as before."""
    with capture_logs() as logs:
        get_logger("vault.test").info("hello", n=1)
        with Vault.init(settings=VaultSettings.build(home=tmp_path / "v", policies=POLICIES)):
            pass
    assert {"event": "hello", "n": 1, "log_level": "info"} in logs
    assert any(e["event"] == "policy_defaults_loaded" for e in logs)


def test_the_cli_prints_no_log_lines_on_stdout(tmp_path: Path) -> None:
    """``vault init`` in a fresh process: stdout holds its own lines only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(PYTHONPATH=str(REPO), VAULT_HOME=str(tmp_path / "v"),
               VAULT_POLICIES=str(POLICIES))
    done = subprocess.run([sys.executable, "-m", "vault.cli", "init"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("initialised vault in")
    assert "[debug" not in done.stdout and "[info" not in done.stdout
