"""Matrix row "Crash injection" (issue 15): the writing process SIGKILLed at every
step of a write, an update, a delete, a key rotation, a crypto-shredding and a
retention sweep, on SQLite and PostgreSQL. The work is done by
``tests/security/crash.py`` in a process of its own (it forks the writers it
kills); see its docstring for the kill points and the checks made after each
kill. Each test prints the figures: kill points, the steps killed before, the
consistent outcomes, and destroyed keys seen in files before the next run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from vault import Vault, VaultSettings

from ..conftest import PgSchemas
from .matrix import CRM, PURPOSE, REPO, child_env, person, settings_of

OPS = ["put", "update", "delete", "destroy", "rotate", "sweep"]


def _run(op: str, settings: VaultSettings, work: Path) -> dict[str, Any]:
    config = {"home": str(settings.home), "work": str(work),
              "database_url": settings.database_url, "keystore_url": settings.keystore_url}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tests.security.crash", op, json.dumps(config)],
                          cwd=REPO, env=child_env(settings), capture_output=True, text=True,
                          timeout=280, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, (done.returncode, done.stderr[-3000:])
    report: dict[str, Any] = json.loads(lines[-1])
    steps = report.pop("steps_killed")
    print(f"\ncrash {report['backend']} {op} in {time.monotonic() - started:.1f}s: "
          f"{json.dumps({k: v for k, v in report.items() if k != 'violations'})}")
    print(f"  killed before: {json.dumps(steps)}")
    report["steps_killed"] = steps
    return report


def _check(report: dict[str, Any]) -> None:
    summary = (f"{report['backend']} {report['op']}: {report['points']} kill points, "
               f"outlived at {report['outlived_at']}")
    assert not report["violations"], f"{summary}; violations: {report['violations']}"
    assert report["points"] >= 3 and report["outlived_at"] == report["points"] + 1, summary
    # Both outcomes were seen: the kills fell before and after the change.
    assert report["consistent_absent"] and report["consistent_changes"], summary


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_sigkill_at_every_step_on_sqlite(op: str, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    settings = settings_of(str(tmp_path / "vault"), None, None)
    _check(_run(op, settings, tmp_path / "work"))


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("op", OPS)
def test_sigkill_at_every_step_on_postgres(op: str, pg_schemas: PgSchemas,
                                           tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    settings = settings_of(str(tmp_path / "vault"), pg_schemas.url(pg_schemas.names[0]),
                           pg_schemas.url(pg_schemas.names[1]))
    _check(_run(op, settings, tmp_path / "work"))


def test_a_shredding_cut_in_two_is_finished_at_the_next_open(settings: VaultSettings) -> None:
    """What the kills between the key store's commit and the data database's showed:
    a tombstone without its marker, index rows and audit entry. The next open marks
    the subject, removes its index rows and audits it (``keys.destroy``, reason
    ``recovered``), once; an open with nothing to recover writes nothing."""
    with Vault.init(settings=settings) as v:
        v.roles.assign("crm", "crm_service", tenant="acme")
        rid = v.put(CRM, "customers", person(1, 1), purpose=PURPOSE, subject_id="cut-1")
        v.put(CRM, "customers", person(1, 2), purpose=PURPOSE, subject_id="kept-1")
        v.keystore.destroy("acme", "cut-1")  # the first half of v.keys.destroy only
        pseudonym = v.pseudonym("acme", "cut-1")
    for _ in range(2):
        with Vault.open(settings=settings) as v, v.engine.connect() as conn:
            marked = conn.execute(text("SELECT subject_id, action FROM erased_subjects")).all()
            index = conn.execute(text("SELECT COUNT(*) FROM blind_index WHERE record_id = :r"),
                                 {"r": rid}).scalar_one()
            recovered = conn.execute(text(
                "SELECT subjects FROM audit_log WHERE action = 'keys.destroy' "
                "AND reason = 'recovered'")).scalars().all()
            assert [tuple(m) for m in marked] == [("cut-1", "keys.destroy")]
            assert index == 0
            assert recovered == [f'["{pseudonym}"]']
            assert v.audit_log.verify().ok
