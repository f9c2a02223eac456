"""Leak canaries over a vault's whole life (issue 15, the matrix).

Canary values go into every kind of field; the vault then does everything it
does (batch and single writes, updates, reads, searches that hit and miss,
deletion, consent, restriction, legal holds, rotation, crypto-shredding, a
retention sweep, audit reports in every format, a checkpoint) and fails in every
way a caller can make it fail. Afterwards no canary, in UTF-8 or UTF-16, is in:
any file of the vault's folder (databases with their WAL and SHM, key file,
reports, checkpoints), any row of any table of either database (PostgreSQL
included), the structlog or stdlib log output, stdout or stderr, or the message,
repr or formatted traceback of any error raised. (Names that look like ids, of
fields, purposes or collections, are echoed in errors on purpose; the canaries
passed as names here are values that do not look like one.)
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from structlog.testing import capture_logs

from tests.helpers import stepped_up
from vault import Actor, FixedClock, Vault, VaultError, VaultSettings
from vault.audit.report import render
from vault.store.engine import is_postgres

from ..conftest import ROLE_USERS
from . import test_data_path

CANARIES = {
    "full_name": "Qjzvokrat Canarion",
    "email": "qjzvokrat.canary@example.org",
    "phone": "+14155550177",
    "postal_address": "91 Canaryweg, Qjzvokrat-City",
    "national_id": "QJZ-CANARY-4411",
    "support_notes": "qjzvokrat support canary note",
    "birth_date": "1961-07-13",
}
PURPOSE = "account_management"
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
COLIN = Actor("colin", "acme")
# With a second factor: the whole life includes erasure (step-up).
CRM = stepped_up(test_data_path.CRM)
DANA = stepped_up(test_data_path.DANA)


def _needles() -> list[bytes]:
    out: list[bytes] = []
    for value in [*CANARIES.values(), "4155550177", "qjzvokrat"]:
        out += [value.encode(), value.encode("utf-16-le"), value.upper().encode()]
    return out


def _canary(n: int = 0) -> dict[str, Any]:
    data = dict(CANARIES)
    data["email"] = f"qjzvokrat.canary{n}@example.org"
    return {**data, "country": "US", "preferred_language": "en"}


def _table_text(engine: Engine) -> str:
    """Every row of every table as text (what a dump of the database holds)."""
    parts: list[str] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            if is_postgres(engine):
                rows = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
                parts.extend(rows)
            else:
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                 for v in row)
    return "\n".join(parts)


def test_no_canary_anywhere_after_a_whole_life(
        settings: VaultSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FixedClock(T0)
    errors: list[str] = []
    reports = tmp_path / "reports"
    reports.mkdir()

    def failing(call: Callable[[], object]) -> None:
        with pytest.raises(VaultError) as info:
            call()
        exc = info.value
        # The traceback without its source lines: those of this file quote the
        # canaries given as arguments; what matters is what Vault puts in it.
        frames = traceback.TracebackException.from_exception(exc, lookup_lines=False)
        for frame in frames.stack:
            frame._line = ""
        errors.extend([str(exc), repr(exc), "".join(frames.format())])

    with capture_logs() as logs, Vault.init(settings=settings, clock=clock) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
        ids = v.put_many(CRM, "customers", [_canary(n) for n in range(6)], purpose=PURPOSE,
                         subject_ids=[f"s{n}" for n in range(6)], jurisdiction="US")
        one = v.put(CRM, "customers", _canary(9), purpose=PURPOSE, subject_id="s9",
                    jurisdiction="DE")
        v.update(CRM, "customers", one, {"support_notes": CANARIES["support_notes"] + " 2",
                                         "phone": None}, purpose=PURPOSE)
        v.get_many(CRM, "customers", ids, purpose=PURPOSE)
        # The control: the scan does see a canary where one is meant to be.
        control = str(v.get(CRM, "customers", ids[1], purpose=PURPOSE).data)
        assert sum(n.decode("utf-8", "replace") in control for n in _needles()) >= 5
        v.find(CRM, "customers", purpose=PURPOSE, email="qjzvokrat.canary1@example.org")
        v.find(CRM, "customers", purpose=PURPOSE, email="qjzvokrat.nobody@example.org")
        v.delete(CRM, "customers", ids[0], purpose=PURPOSE)
        v.consent.grant("s1", "marketing", tenant="acme", notice_id="marketing",
                        notice_version=1, source="web-shop")
        v.consent.withdraw("s1", "marketing", tenant="acme")
        v.subjects.restrict("s2", tenant="acme", reason="subject_request")
        v.holds.place("acme", "s3", reason="CASE-2020-17", actor=DANA)
        v.keys.rotate()
        v.keys.destroy("s4", tenant="acme")
        # Every way a caller can fail, with canaries in the arguments.
        failing(lambda: v.put(CRM, "customers", {**_canary(), "email": "qjzvokrat@@bad"},
                              purpose=PURPOSE))
        failing(lambda: v.put(CRM, "customers", {**_canary(), CANARIES["email"]: "x"},
                              purpose=PURPOSE))
        failing(lambda: v.put(CRM, "customers", _canary(), purpose=CANARIES["email"]))
        failing(lambda: v.put(CRM, CANARIES["full_name"], _canary(), purpose=PURPOSE))
        failing(lambda: v.get(Actor("mallory", "acme"), "customers", ids[1], purpose=PURPOSE))
        failing(lambda: v.get(CRM, "customers", CANARIES["phone"], purpose=PURPOSE))
        failing(lambda: v.get(CRM, "customers", ids[4], purpose=PURPOSE))  # shredded
        failing(lambda: v.find(CRM, "customers", purpose=PURPOSE,
                               **{CANARIES["postal_address"]: "x"}))
        failing(lambda: v.find(CRM, "customers", purpose=PURPOSE,
                               full_name=CANARIES["full_name"]))  # not searchable
        failing(lambda: v.update(CRM, "customers", ids[1], {"birth_date": "qjzvokrat"},
                                 purpose=PURPOSE))
        failing(lambda: v.delete(CRM, "customers", ids[3], purpose=PURPOSE))  # on hold
        failing(lambda: v.consent.grant("qjzvokrat canary", "marketing", tenant="acme",
                                        notice_id="marketing", notice_version=1))
        failing(lambda: v.holds.place("acme", "s5", reason=CANARIES["email"], actor=DANA))
        clock.set(T0.replace(year=2030))
        v.retention.sweep()
        for fmt in ("json", "csv", "html"):
            rep = v.audit.report(actor=COLIN, output=fmt)
            (reports / f"report.{fmt}").write_text(render(rep, fmt))
        v.audit.checkpoint(reports)
        reprs = [repr(v), repr(v.keystore), repr(v.get(CRM, "customers", ids[1],
                                                       purpose=PURPOSE))]
        data_text = _table_text(v.engine)
        keys_text = _table_text(v.keystore.engine)
        assert v.audit.verify().ok
    out = capsys.readouterr()
    texts = {
        "logs": repr(logs), "stdlib logs": caplog.text, "stdout": out.out, "stderr": out.err,
        "errors": "\n".join(errors), "reprs": "\n".join(reprs),
        "data database": data_text, "key store": keys_text,
    }
    assert len(errors) == 3 * 13
    found = [(where, needle) for where, body in texts.items()
             for needle in _needles() if needle.decode("utf-8", "replace") in body]
    files = [p for p in [*Path(settings.home).rglob("*"), *reports.rglob("*")] if p.is_file()]
    for path in files:
        content = path.read_bytes()
        found += [(str(path.name), needle) for needle in _needles() if needle in content]
    print(f"\nleak canaries ({v.engine.dialect.name}): {len(_needles())} needles in "
          f"{len(texts)} outputs and {len(files)} files, {len(errors) // 3} errors: "
          f"{len(found)} found")
    assert found == [], [line for line in texts["errors"].splitlines() if "qjzvokrat" in line]
