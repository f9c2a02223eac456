"""Destructive commands ask first (issue 16): ``keys retire``, ``retention sweep``
outside a dry run, ``retention holds lift`` and ``dsar process`` of an erasure ask for
confirmation on a terminal and take ``--yes``/``-y`` for scripts; without a terminal
and without ``--yes`` they refuse with exit code 2 and one line naming ``--yes``."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import typer
from click.testing import CliRunner as ClickRunner
from typer.testing import CliRunner

from tests.conftest import POLICIES
from vault import Actor, Vault
from vault.cli import app

runner = CliRunner()
# Typer's runner takes the typed input as text only; Click's (under it) also takes a
# stream, which can say it is a terminal.
at_a_terminal = ClickRunner()
ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.BytesIO):
    """What a person types, on a stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _run(home: Path, *args: str, typed: str | None = None) -> tuple[int, str]:
    """Without ``typed``: no terminal (Typer's CliRunner); with it: a person types it."""
    env = {"VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home), "COLUMNS": "200"}
    if typed is None:
        result = runner.invoke(app, list(args), env=env)
    else:
        result = at_a_terminal.invoke(typer.main.get_command(app), list(args), env=env,
                                      input=_Terminal(typed.encode()))
    return result.exit_code, result.output


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A vault whose KEK version 1 is no longer used (rotated to 2)."""
    home = tmp_path / "home"
    assert _run(home, "init")[0] == 0
    assert _run(home, "keys", "rotate")[0] == 0
    return home


def _versions(home: Path) -> tuple[int, ...]:
    with Vault.open(home, policies=POLICIES) as v:
        return v.keys.status().versions


def test_keys_retire_asks_on_a_terminal(home: Path) -> None:
    """No keeps the key (exit 1, nothing changed); yes retires it."""
    code, output = _run(home, "keys", "retire", "1", typed="n\n")
    assert code == 1 and "Continue?" in output and "nothing was changed" in output
    assert 1 in _versions(home)
    code, output = _run(home, "keys", "retire", "1", typed="\n")  # the default is no
    assert code == 1 and 1 in _versions(home)
    code, output = _run(home, "keys", "retire", "1", typed="y\n")
    assert code == 0 and "KEK version 1 retired" in output, output
    assert _versions(home) == (2,)


def test_without_a_terminal_destructive_commands_need_yes(home: Path) -> None:
    """Without a terminal: exit 2 and one line saying to pass --yes; nothing changed.
    --yes and -y run the command without asking."""
    for args in (("keys", "retire", "1"), ("retention", "sweep"),
                 ("retention", "holds", "lift", "0123456789abcdef")):
        code, output = _run(home, *args)
        assert code == 2, (args, output)
        assert len(output.strip().splitlines()) == 1 and "pass --yes" in output, output
    assert 1 in _versions(home)
    code, output = _run(home, "retention", "sweep", "--dry-run")  # changes nothing: no question
    assert code == 0 and "would remove" in output
    code, output = _run(home, "retention", "sweep", "-y")
    assert code == 0 and "removed 0 record(s)" in output
    code, output = _run(home, "keys", "retire", "1", "-y")
    assert code == 0 and _versions(home) == (2,)


def test_holds_lift_asks_on_a_terminal(home: Path) -> None:
    """A hold stays in place when the operator says no."""
    with Vault.open(home, policies=POLICIES) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.put(Actor("crm", "acme"), "customers", {"full_name": "Ana"},
              purpose="account_management", subject_id="s-1")
    code, output = _run(home, "retention", "holds", "place", "--tenant", "acme",
                        "--subject", "s-1", "--reason", "LIT-1")
    assert code == 0, output
    hold_id = output.split()[1]
    code, output = _run(home, "retention", "holds", "lift", hold_id, typed="n\n")
    assert code == 1 and "nothing was changed" in output
    with Vault.open(home, policies=POLICIES) as v:
        assert [h.id for h in v.holds.list(active_only=True)] == [hold_id]
    code, output = _run(home, "retention", "holds", "lift", hold_id, typed="y\n")
    assert code == 0 and f"hold {hold_id} lifted" in output
    with Vault.open(home, policies=POLICIES) as v:
        assert v.holds.list(active_only=True) == []


def _command(home: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "VAULT_POLICIES": str(POLICIES), "VAULT_HOME": str(home),
           "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-c", "from vault.cli import main; main()"], env


def test_a_script_without_a_terminal_is_refused(home: Path) -> None:
    """A real process whose stdin is not a terminal (cron, a pipe): exit 2 at once,
    one line on stderr naming --yes, never a prompt that waits."""
    argv, env = _command(home)
    done = subprocess.run([*argv, "keys", "retire", "1"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "pass --yes" in done.stderr and "Continue?" not in done.stderr
    assert 1 in _versions(home)
    done = subprocess.run([*argv, "keys", "retire", "1", "--yes"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert _versions(home) == (2,)


def _on_a_terminal(argv: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; type ``answer``
    once the question is shown."""
    answers = [(b"Continue?", answer)]
    leader, follower = pty.openpty()
    # The terminal is the child's controlling terminal too, as for a login shell.
    proc = subprocess.Popen(argv, env=env, stdin=follower, stdout=follower, stderr=follower,
                            close_fds=True, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(follower)
    seen, mark, deadline = b"", 0, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if answers and answers[0][0] in seen[mark:]:
                mark = len(seen)  # the next prompt comes after this one
                os.write(leader, answers.pop(0)[1])
            if proc.poll() is not None and not ready:
                break
        try:
            return proc.wait(timeout=30), seen.decode(errors="replace")
        except subprocess.TimeoutExpired:
            raise AssertionError(seen.decode(errors="replace")) from None
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()


def test_a_person_at_a_real_terminal_is_asked(home: Path) -> None:
    """On a real (pseudo-)terminal the command asks; n keeps the key, y retires it."""
    argv, env = _command(home)
    code, seen = _on_a_terminal([*argv, "keys", "retire", "1"], env, b"n\n")
    assert code == 1 and "Continue?" in seen and "nothing was changed" in seen, seen
    assert 1 in _versions(home)
    code, seen = _on_a_terminal([*argv, "keys", "retire", "1"], env, b"y\n")
    assert code == 0 and "retired" in seen, seen
    assert _versions(home) == (2,)


def test_an_erasure_at_a_terminal_asks_first(home: Path, tmp_path: Path) -> None:
    """dsar process of an erasure at a terminal: no changes nothing; yes (with the
    DPO's code, --otp) erases."""
    import pyotp

    with Vault.open(home, policies=POLICIES) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        v.roles.assign("dana", "dpo", tenant="acme")
        v.put(Actor("crm", "acme"), "customers", {"full_name": "Ana", "country": "DE"},
              purpose="account_management", subject_id="s-1", jurisdiction="DE")
        v.identity.create_key("dana-key", actor_id="dana", tenant="acme", kind="person")
        totp = pyotp.parse_uri(v.identity.enrol_totp("dana-key"))
        request = v.dsar.submit(None, "erase", tenant="acme", subject_id="s-1")
        request = v.dsar.verify(None, request.id, tenant="acme",
                                accept_as_known="signed_in_customer")
    args = ["dsar", "process", request.id, "--tenant", "acme", "--actor", "dana",
            "--out", str(tmp_path / "certs")]
    code, output = _run(home, *args, typed="n\n")
    assert code == 1 and "erases the subject's data" in output
    with Vault.open(home, policies=POLICIES) as v:
        assert v.dsar.get(None, request.id, tenant="acme").state.value == "identity_verified"
    code, output = _run(home, *args, "--otp", totp.now(),  # type: ignore[attr-defined]
                        typed="y\n")
    assert code == 0 and "completed" in output, output
