"""Data-subject requests end to end: the lifecycle and its invalid moves, the
append-only history, verification tiers and the unverified-identifier attack,
exports whose signature verifies, erasure that a restored data database does not
undo, the other kinds, reports, and no PII in the request log, the audit log,
certificates or errors."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import ROLE_USERS
from tests.helpers import stepped_up
from vault import (
    AccessDenied,
    Actor,
    ConfigError,
    FixedClock,
    InvalidData,
    KeyDestroyed,
    NotFound,
    Vault,
    VaultSettings,
)
from vault.audit.checkpoint import load_public_key
from vault.dsar import DSARRequest, RequestState, VerificationResult, verify_bundle, verify_document
from vault.errors import ConsentRequired, InvalidExport, InvalidTransition, SubjectRestricted
from vault.store.engine import is_sqlite
from vault.store.models import AuditEntryRow

T0 = dt.datetime(2026, 3, 2, 17, tzinfo=dt.UTC)
# The DPO proved a second factor: exports and erasure need one (step-up).
DANA = stepped_up(Actor("dana", "acme"), T0)      # dpo
CRM = Actor("crm", "acme")        # crm_service
SALLY = Actor("sally", "acme")    # sales_rep

# The PII canaries: none of these may appear in the request log, the audit log,
# a certificate or an error.
ZED = {"full_name": "Zebulon Canaryfield", "email": "zebulon.canary@example.com",
       "phone": "+14155550123", "birth_date": "1980-05-06",
       "postal_address": "1 Canary Way, San Francisco", "national_id": "123-45-6789",
       "country": "US"}
BEA = {"full_name": "Beatrix Otherperson", "email": "beatrix.other@example.com",
       "phone": "+14155550999", "birth_date": "1975-11-12", "country": "US"}
CANARIES = ("Canaryfield", "zebulon", "4155550123", "Canary Way", "123-45-6789", "123456789",
            "Otherperson", "beatrix", "4155550999", "1980-05-06")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def _init(settings: VaultSettings, clock: FixedClock) -> Vault:
    """A new vault with a fixed clock and the demo roles in ``acme``."""
    v = Vault.init(settings=settings, clock=clock)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    return v


@pytest.fixture
def dv(settings: VaultSettings, clock: FixedClock) -> Iterator[Vault]:
    """A vault on each backend with a fixed clock and the demo roles in ``acme``."""
    v = _init(settings, clock)
    try:
        yield v
        assert v.audit_log.verify().ok
    finally:
        v.close()


def _person(v: Vault, data: dict[str, str], jurisdiction: str, records: int = 1) -> tuple[str,
                                                                                         list[str]]:
    first = v.put(CRM, "customers", data, purpose="account_management",
                  jurisdiction=jurisdiction)
    subject = v.get(CRM, "customers", first, purpose="account_management").subject_id
    ids = [first] + [v.put(CRM, "customers", {"full_name": data["full_name"],
                                               "support_notes": f"ticket {n}"},
                           purpose="account_management", subject_id=subject)
                     for n in range(records - 1)]
    return subject, ids


def _verified(v: Vault, kind: str, subject: str) -> DSARRequest:
    request = v.dsar.submit(DANA, kind, tenant="acme", subject_id=subject)
    if request.state is RequestState.RECEIVED:
        request = v.dsar.verify(DANA, request.id, tenant="acme",
                                evidence={"email": ZED["email"], "phone": ZED["phone"],
                                          "birth_date": ZED["birth_date"]},
                                declaration="decl-1")
    assert request.state is RequestState.IDENTITY_VERIFIED
    return request


def _dump(v: Vault) -> str:
    """Every row of the request log, its history and the audit log, as text."""
    chunks = []
    with v.engine.connect() as conn:
        for table in ("dsar_requests", "dsar_events", "audit_log"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def _assert_no_pii(blob: str) -> None:
    lowered = blob.lower()
    for canary in CANARIES:
        assert canary.lower() not in lowered, canary


# ---------------------------------------------------------------- lifecycle


def test_access_request_from_submit_to_completed(dv: Vault, tmp_path: Path) -> None:
    """A CCPA request to know: matched by e-mail, verified by two data points,
    acknowledged, exported; each move in the history and the audit log."""
    zed, ids = _person(dv, ZED, "US-CA", records=2)
    request = dv.dsar.submit(CRM, "know", tenant="acme", identifiers={"email": ZED["email"]})
    assert (request.state, request.regime, request.subject_id) == (
        RequestState.RECEIVED, "ccpa", zed)
    assert request.acknowledge_by == dt.date(2026, 3, 16)   # 10 business days
    assert request.due_on == dt.date(2026, 4, 16)           # 45 calendar days
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"full_name": "ZEBULON  canaryfield",
                                       "birth_date": ZED["birth_date"]})
    assert request.state is RequestState.IDENTITY_VERIFIED
    assert request.verification.result is VerificationResult.VERIFIED
    request = dv.dsar.acknowledge(DANA, request.id, tenant="acme")
    request = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    assert request.state is RequestState.COMPLETED and request.closed_at == T0
    assert [h.event for h in request.history] == [
        "submitted", "verified", "acknowledged", "processing", "completed"]
    assert [h.to_state for h in request.history][-1] is RequestState.COMPLETED
    records = json.loads((Path(request.result["export"]) / "records.json").read_text())
    assert sorted(r["record_id"] for r in records["customers"]) == sorted(ids)
    with dv.engine.connect() as conn:
        actions = [r[0] for r in conn.execute(text(
            "SELECT action FROM audit_log WHERE action LIKE 'dsar.%' ORDER BY seq"))]
    assert actions == ["dsar.submit", "dsar.verify", "dsar.acknowledge", "dsar.process",
                       "dsar.process"]
    assert dv.dsar.get(DANA, request.id, tenant="acme") == request
    _assert_no_pii(_dump(dv))


def test_history_is_append_only(dv: Vault) -> None:
    """The database refuses UPDATE and DELETE (and TRUNCATE) of a request's history."""
    dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE")
    statements = ["UPDATE dsar_events SET reason = 'x'", "DELETE FROM dsar_events"]
    if not is_sqlite(dv.engine):
        statements.append("TRUNCATE dsar_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), dv.engine.begin() as conn:
            conn.execute(text(statement))


def test_duplicate_open_request_is_linked_not_doubled(dv: Vault) -> None:
    zed, _ = _person(dv, ZED, "DE")
    first = dv.dsar.submit(DANA, "erasure", tenant="acme", subject_id=zed)
    again = dv.dsar.submit(DANA, "erase", tenant="acme", identifiers={"email": ZED["email"]},
                           channel="email")
    assert again.id == first.id
    assert again.history[-1].event == "linked"
    assert len(dv.dsar.list(DANA, tenant="acme")) == 1


def test_every_move_is_authorised(dv: Vault) -> None:
    """A sales rep may not submit; the CRM may submit but not read, verify or process."""
    with pytest.raises(AccessDenied):
        dv.dsar.submit(SALLY, "access", tenant="acme", jurisdiction="DE")
    request = dv.dsar.submit(CRM, "access", tenant="acme", jurisdiction="DE")
    for call in (lambda: dv.dsar.get(CRM, request.id, tenant="acme"),
                 lambda: dv.dsar.verify(CRM, request.id, tenant="acme", evidence={}),
                 lambda: dv.dsar.process(CRM, request.id, tenant="acme"),
                 lambda: dv.dsar.reject(CRM, request.id, tenant="acme",
                                        reason_code="excessive"),
                 lambda: dv.dsar.report(CRM, tenant="acme")):
        with pytest.raises(AccessDenied):
            call()
    with dv.engine.connect() as conn:
        denied = conn.execute(text(
            "SELECT count(*) FROM audit_log WHERE decision = 'deny' AND action LIKE 'dsar.%'"
        )).scalar_one()
    assert denied == 6


# ---------------------------------------------------------------- invalid transitions


def _in_state(v: Vault, state: str) -> DSARRequest:
    """A GDPR request brought to ``state``."""
    zed = _person(v, {**ZED, "country": "DE"}, "DE")[0]
    kind = "automated_decision_review"
    request = v.dsar.submit(DANA, kind, tenant="acme", subject_id=zed)
    if state == "received":
        return request
    if state == "rejected":
        return v.dsar.reject(DANA, request.id, tenant="acme", reason_code="manifestly_unfounded")
    request = v.dsar.verify(DANA, request.id, tenant="acme", accept_as_known="signed_in")
    if state == "identity_verified":
        return request
    request = v.dsar.process(DANA, request.id, tenant="acme")
    assert request.state is RequestState.IN_PROGRESS
    if state == "in_progress":
        return request
    return v.dsar.complete(DANA, request.id, tenant="acme", note="decision reviewed by a person")


MOVES: dict[str, Callable[[Vault, str], object]] = {
    "verify": lambda v, r: v.dsar.verify(DANA, r, tenant="acme", accept_as_known="signed_in"),
    "process": lambda v, r: v.dsar.process(DANA, r, tenant="acme"),
    "complete": lambda v, r: v.dsar.complete(DANA, r, tenant="acme"),
    "reject": lambda v, r: v.dsar.reject(DANA, r, tenant="acme", reason_code="excessive"),
    "extend": lambda v, r: v.dsar.extend(DANA, r, tenant="acme", reason="complex"),
    "acknowledge": lambda v, r: v.dsar.acknowledge(DANA, r, tenant="acme"),
}
INVALID = [
    ("received", "process"), ("received", "complete"),
    ("identity_verified", "verify"), ("identity_verified", "complete"),
    ("in_progress", "verify"),
    *[(closed, move) for closed in ("completed", "rejected") for move in MOVES],
]


@pytest.mark.parametrize(("state", "move"), INVALID, ids=[f"{s}-{m}" for s, m in INVALID])
def test_invalid_transition_is_refused_and_changes_nothing(
        settings: VaultSettings, clock: FixedClock, state: str, move: str) -> None:
    """Every move the lifecycle forbids raises InvalidTransition; state and history stay."""
    with _init(settings, clock) as v:
        request = _in_state(v, state)
        assert request.state.value == state
        with pytest.raises(InvalidTransition) as info:
            MOVES[move](v, request.id)
        assert info.value.request_id == request.id and info.value.state == state
        after = v.dsar.get(DANA, request.id, tenant="acme")
        assert after.state == request.state and after.history == request.history


def test_acknowledge_twice_is_refused(dv: Vault) -> None:
    request = dv.dsar.submit(DANA, "know", tenant="acme", jurisdiction="US-CA")
    dv.dsar.acknowledge(DANA, request.id, tenant="acme")
    with pytest.raises(InvalidTransition):
        dv.dsar.acknowledge(DANA, request.id, tenant="acme")


def test_late_acknowledgement_is_recorded_as_late(dv: Vault, clock: FixedClock) -> None:
    request = dv.dsar.submit(DANA, "know", tenant="acme", jurisdiction="US-CA")
    clock.set(T0 + dt.timedelta(days=20))
    acked = dv.dsar.acknowledge(DANA, request.id, tenant="acme")
    assert acked.history[-1].reason == "late"
    assert dv.dsar.report(DANA, tenant="acme").groups[0].acknowledged_late == 1


def test_rejection_needs_a_known_reason_code_and_a_note_without_contact_details(
        dv: Vault) -> None:
    request = dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE")
    with pytest.raises(InvalidData):
        dv.dsar.reject(DANA, request.id, tenant="acme", reason_code="because")
    with pytest.raises(InvalidData) as info:
        dv.dsar.reject(DANA, request.id, tenant="acme", reason_code="excessive",
                       note=f"write to {ZED['email']}")
    _assert_no_pii(str(info.value))
    rejected = dv.dsar.reject(DANA, request.id, tenant="acme", reason_code="excessive",
                              note="third identical request this month")
    assert rejected.reject_reason == "excessive"
    assert rejected.history[-1].reason == "excessive: third identical request this month"


# ---------------------------------------------------------------- verification


def test_ccpa_specific_pieces_need_three_points_and_a_declaration(dv: Vault) -> None:
    """CCPA `access` (specific pieces): two points fail, three without a declaration
    fail, three with one pass; each failure is counted."""
    zed, _ = _person(dv, ZED, "US-CA")
    request = dv.dsar.submit(DANA, "access", tenant="acme", subject_id=zed)
    assert (request.verification.points, request.verification.declaration) == (3, True)
    two = {"email": ZED["email"], "phone": ZED["phone"]}
    three = {**two, "postal_address": ZED["postal_address"].upper()}
    request = dv.dsar.verify(DANA, request.id, tenant="acme", evidence=two, declaration="d-1")
    assert request.state is RequestState.RECEIVED
    assert request.verification.result is VerificationResult.FAILED
    request = dv.dsar.verify(DANA, request.id, tenant="acme", evidence=three)
    assert request.verification.failed_attempts == 2
    request = dv.dsar.verify(DANA, request.id, tenant="acme", evidence=three, declaration="d-1")
    assert request.state is RequestState.IDENTITY_VERIFIED
    assert request.verification.matched == 3


def test_ccpa_categories_need_two_points(dv: Vault) -> None:
    zed, _ = _person(dv, ZED, "US-CA")
    request = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=zed)
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"email": ZED["email"], "birth_date": "1999-01-01"})
    assert request.state is RequestState.RECEIVED
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"email": ZED["email"], "birth_date": ZED["birth_date"]})
    assert request.state is RequestState.IDENTITY_VERIFIED


def test_opt_out_needs_no_verification(dv: Vault) -> None:
    """CCPA forbids requiring verification of an opt-out of sale/sharing (§7026(d))."""
    zed, _ = _person(dv, ZED, "US-CA")
    request = dv.dsar.submit(CRM, "opt_out_sale_sharing", tenant="acme", subject_id=zed,
                             channel="gpc")
    assert request.state is RequestState.IDENTITY_VERIFIED
    assert request.verification.result is VerificationResult.NOT_REQUIRED
    done = dv.dsar.process(DANA, request.id, tenant="acme")
    assert done.state is RequestState.COMPLETED
    assert sorted(done.result["withdrawn"]) == ["sale", "sharing"]
    states = dv.consent.state(zed, tenant="acme")
    assert {s.purpose: s.status.value for s in states} == {"sale": "withdrawn",
                                                           "sharing": "withdrawn"}


def test_gdpr_requester_may_be_accepted_as_known_ccpa_may_not(dv: Vault) -> None:
    gdpr = _person(dv, {**ZED, "country": "DE"}, "DE")[0]
    ccpa = _person(dv, BEA, "US-CA")[0]
    request = dv.dsar.submit(DANA, "access", tenant="acme", subject_id=gdpr)
    request = dv.dsar.verify(DANA, request.id, tenant="acme", accept_as_known="signed_in")
    assert request.verification.result is VerificationResult.ACCEPTED_AS_KNOWN
    other = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=ccpa)
    with pytest.raises(InvalidData):
        dv.dsar.verify(DANA, other.id, tenant="acme", accept_as_known="signed_in")


def test_failed_attempts_past_the_limit_reject_the_request(dv: Vault) -> None:
    zed, _ = _person(dv, ZED, "US-CA")
    request = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=zed)
    for _ in range(3):
        request = dv.dsar.verify(DANA, request.id, tenant="acme",
                                 evidence={"email": "wrong@example.com",
                                           "birth_date": "2001-01-01"})
    assert request.state is RequestState.REJECTED
    assert request.reject_reason == "identity_not_verified"
    with pytest.raises(InvalidTransition):
        dv.dsar.verify(DANA, request.id, tenant="acme", evidence={"email": ZED["email"]})


def test_malformed_evidence_names_the_field_not_the_value(dv: Vault) -> None:
    zed, _ = _person(dv, ZED, "US-CA")
    request = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=zed)
    with pytest.raises(InvalidData) as info:
        dv.dsar.verify(DANA, request.id, tenant="acme",
                       evidence={"birth_date": "Zebulon Canaryfield"})
    _assert_no_pii(str(info.value))
    with pytest.raises(InvalidData):
        dv.dsar.verify(DANA, request.id, tenant="acme", evidence={"device_info": "x"})


def test_unverified_identifier_does_not_widen_the_request(dv: Vault, tmp_path: Path) -> None:
    """The attack: a requester adds somebody else's phone number. The identifiers
    point to two subjects, so none is matched; the evidence verifies only Zed; the
    export holds Zed's records only and nothing of Bea."""
    zed, zed_ids = _person(dv, ZED, "US-CA")
    _bea, bea_ids = _person(dv, BEA, "US-CA")
    request = dv.dsar.submit(CRM, "know", tenant="acme", jurisdiction="US-CA",
                             identifiers={"email": ZED["email"], "phone": BEA["phone"]})
    assert request.subject_id is None
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"email": ZED["email"], "birth_date": ZED["birth_date"]})
    assert request.subject_id == zed
    assert "ignored_identifiers:1" in (request.history[-1].reason or "")
    done = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    folder = Path(done.result["export"])
    records = json.loads((folder / "records.json").read_text())
    assert [r["record_id"] for r in records["customers"]] == zed_ids
    everything = "".join(p.read_text() for p in folder.iterdir())
    assert BEA["phone"] not in everything and BEA["full_name"] not in everything
    assert not set(bea_ids) & set(everything.split('"'))


def test_claimed_subject_cannot_be_verified_with_another_persons_data(dv: Vault) -> None:
    """A request for Zed with Bea's phone attached is verified against Zed only:
    Bea's own details do not verify it (nor make it Bea's)."""
    zed, _ = _person(dv, ZED, "US-CA")
    _person(dv, BEA, "US-CA")
    request = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=zed,
                             identifiers={"phone": BEA["phone"]})
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"phone": BEA["phone"], "full_name": BEA["full_name"]})
    assert request.state is RequestState.RECEIVED and request.subject_id == zed
    assert request.verification.matched == 0


def test_ccpa_limit_of_two_access_requests_in_twelve_months(dv: Vault, clock: FixedClock,
                                                            tmp_path: Path) -> None:
    zed, _ = _person(dv, ZED, "US-CA")
    for n in range(2):
        request = _verified(dv, "know", zed)
        dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path / str(n))
        clock.advance(dt.timedelta(days=60))
    third = dv.dsar.submit(DANA, "access", tenant="acme", subject_id=zed)
    assert third.state is RequestState.REJECTED and third.reject_reason == "request_limit"
    clock.advance(dt.timedelta(days=300))
    fourth = dv.dsar.submit(DANA, "know", tenant="acme", subject_id=zed)
    assert fourth.state is RequestState.RECEIVED


# ---------------------------------------------------------------- exports


@pytest.fixture
def bundle(dv: Vault, tmp_path: Path) -> tuple[Vault, Path]:
    zed, _ = _person(dv, ZED, "US-CA", records=3)
    dv.consent.withdraw(zed, "marketing", tenant="acme", actor=CRM)
    request = _verified(dv, "access", zed)
    done = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path / "out")
    return dv, Path(done.result["export"])


def test_export_bundle_verifies_and_is_private(bundle: tuple[Vault, Path]) -> None:
    v, folder = bundle
    key = load_public_key(v.audit.export_public_key())
    manifest = verify_bundle(folder, key)
    assert sorted(manifest["files"]) == sorted(
        ["records.json", "customers.csv", "categories.json", "consent.json",
         "access_log.json", "retention.json", "recipients.json"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    consent = json.loads((folder / "consent.json").read_text())
    assert [e["kind"] for e in consent] == ["withdraw"]
    log = json.loads((folder / "access_log.json").read_text())
    assert {"crm_service"} <= {role for e in log for role in e["by_roles"]}
    assert all("crm" not in e["by_roles"] for e in log)  # roles, not people
    assert (folder / "customers.csv").read_text().count("\n") == 4


TAMPER = {
    "changed": lambda f: (f / "records.json").write_text(
        (f / "records.json").read_text().replace("Zebulon", "Zebulom")),
    "changed-csv": lambda f: (f / "customers.csv").write_bytes(
        (f / "customers.csv").read_bytes() + b"x"),
    "added": lambda f: (f / "extra.json").write_text("{}"),
    "removed": lambda f: (f / "consent.json").unlink(),
    "manifest": lambda f: (f / "manifest.json").write_bytes(
        (f / "manifest.json").read_bytes().replace(b'"kind":"access"', b'"kind":"erasure"')),
    "signature": lambda f: (f / "manifest.sig").write_text("AAAA\n"),
}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_export_bundle_fails_when_any_file_changes(bundle: tuple[Vault, Path], how: str,
                                                   tmp_path: Path) -> None:
    """A changed, added or removed file, or a changed manifest or signature, fails."""
    v, folder = bundle
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    TAMPER[how](copy)
    with pytest.raises(InvalidExport) as info:
        verify_bundle(copy, load_public_key(v.audit.export_public_key()))
    expected = {"changed": "changed:records.json", "changed-csv": "changed:customers.csv",
                "added": "added:extra.json", "removed": "removed:consent.json",
                "manifest": "signature", "signature": "signature"}[how]
    assert expected in info.value.problems


def test_export_into_an_existing_folder_is_refused_and_can_resume(
        dv: Vault, tmp_path: Path) -> None:
    """A bundle never writes into a folder that exists; the request stays in progress
    and processing resumes with another folder."""
    zed, _ = _person(dv, ZED, "US-CA")
    request = _verified(dv, "know", zed)
    (tmp_path / f"dsar-{request.id}").mkdir()
    with pytest.raises(ConfigError):
        dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    assert dv.dsar.get(DANA, request.id, tenant="acme").state is RequestState.IN_PROGRESS
    done = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path / "second")
    assert done.state is RequestState.COMPLETED


# ---------------------------------------------------------------- erasure


class DataCopy:
    """A copy of the data database (SQLite: its files; PostgreSQL: the subject's rows).

    ``take`` and ``restore`` return the vault to go on with: on SQLite the files are
    copied with the vault closed, and a vault opened again on them is returned."""

    def __init__(self, settings: VaultSettings, clock: FixedClock, tmp: Path) -> None:
        self.settings, self.clock, self.tmp = settings, clock, tmp
        self.sqlite = settings.database_url is None
        self.rows: dict[str, list[Any]] = {}

    def files(self) -> list[Path]:
        db = self.settings.home / "data.db"
        return [db, db.with_name("data.db-wal"), db.with_name("data.db-shm")]

    def _reopened(self, v: Vault, copy_files: Callable[[], None]) -> Vault:
        v.close()
        copy_files()
        return Vault.open(settings=self.settings, clock=self.clock)

    def take(self, v: Vault, subject: str) -> Vault:
        if self.sqlite:
            return self._reopened(v, self._take_files)
        with v.engine.connect() as conn:
            for table in ("records", "blind_index"):
                where = ("subject_id = :s" if table == "records" else
                         "record_id IN (SELECT id FROM records WHERE subject_id = :s)")
                self.rows[table] = [dict(r._mapping) for r in conn.execute(
                    text(f"SELECT * FROM {table} WHERE {where}"), {"s": subject})]
        return v

    def _take_files(self) -> None:
        for f in self.files():
            if f.exists():
                shutil.copy2(f, self.tmp / f.name)

    def _restore_files(self) -> None:
        for f in self.files():
            f.unlink(missing_ok=True)
            if (self.tmp / f.name).exists():
                shutil.copy2(self.tmp / f.name, f)

    def restore(self, v: Vault, subject: str) -> Vault:
        if self.sqlite:
            return self._reopened(v, self._restore_files)
        # The old copy has the rows back and no erasure marker.
        with v.engine.begin() as conn:
            conn.execute(text("DELETE FROM erased_subjects WHERE subject_id = :s"),
                         {"s": subject})
            for row in self.rows["records"]:  # the copy's rows replace today's
                conn.execute(text("DELETE FROM blind_index WHERE record_id = :r"),
                             {"r": row["id"]})
                conn.execute(text("DELETE FROM records WHERE id = :r"), {"r": row["id"]})
            for table in ("records", "blind_index"):
                for row in self.rows[table]:
                    cols = ", ".join(row)
                    conn.execute(text(f"INSERT INTO {table} ({cols}) VALUES "
                                      f"({', '.join(':' + c for c in row)})"), row)
        return v


def _erasure_after_a_copy(settings: VaultSettings, clock: FixedClock, tmp_path: Path
                          ) -> tuple[Vault, DataCopy, str, list[str], DSARRequest]:
    """A Californian with two records, a verified erasure request for them, and a copy
    of the data database taken before it is processed: (vault, copy, subject, records,
    request)."""
    v = _init(settings, clock)
    zed, ids = _person(v, ZED, "US-CA", records=2)
    request = _verified(v, "delete", zed)
    copy = DataCopy(settings, clock, tmp_path)
    return copy.take(v, zed), copy, zed, ids, request


def test_erasure_survives_restoring_an_old_copy_of_the_data_database(
        settings: VaultSettings, clock: FixedClock, tmp_path: Path) -> None:
    """Copy the data database, erase the subject, restore the copy: the subject's
    records are back, but they cannot be read (the data key is destroyed)."""
    v, copy, zed, ids, request = _erasure_after_a_copy(settings, clock, tmp_path)
    done = v.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    assert done.state is RequestState.COMPLETED
    certificate = done.result["certificate"]
    verify_document(certificate, load_public_key(v.audit.export_public_key()))
    assert certificate["destroyed"] == {"records": {"customers": 2}, "data_key": True,
                                        "blind_index": True, "erasure_marker": True}
    assert certificate["subject"] == v.pseudonym("acme", zed) and certificate["kept"] == []
    assert certificate["audit_positions"]
    assert certificate["no_key_store_backup_after"] == "2026-04-06"
    _assert_no_pii(json.dumps(certificate))
    _assert_no_pii(Path(done.result["certificate_file"]).read_text())
    v = copy.restore(v, zed)
    try:
        with v.engine.connect() as conn:
            back = conn.execute(text("SELECT count(*) FROM records WHERE subject_id = :s"),
                                {"s": zed}).scalar_one()
        assert back == 2  # the old copy holds the ciphertexts...
        with pytest.raises(KeyDestroyed):  # ...which no key opens
            v.get(CRM, "customers", ids[0], purpose="account_management")
        assert v.find(CRM, "customers", purpose="account_management",
                      email=ZED["email"]) == []
        _assert_no_pii(_dump(v))
    finally:
        v.close()


def test_erasure_with_exemptions_reseals_what_is_kept_under_a_new_key(
        settings: VaultSettings, clock: FixedClock, tmp_path: Path) -> None:
    """A kept field moves under a fresh data key (a restricted successor subject)
    before the old key is destroyed: restoring a copy of the data database taken
    before the erasure brings back no readable erased field."""
    v, copy, zed, ids, request = _erasure_after_a_copy(settings, clock, tmp_path)
    done = v.dsar.process(DANA, request.id, tenant="acme",
                          exemptions={"customers.national_id": "ccpa_1798_105_d_8"})
    assert done.state is RequestState.PARTIALLY_COMPLETED
    certificate = done.result["certificate"]
    verify_document(certificate, load_public_key(v.audit.export_public_key()))
    assert {"scope": "customers.national_id", "reason": "ccpa_1798_105_d_8"} in certificate["kept"]
    assert certificate["destroyed"]["data_key"] is True
    assert certificate["kept_under_new_key"] is True
    successor = done.result["successor_subject_id"]
    assert certificate["successor"] == v.pseudonym("acme", successor)
    _assert_no_pii(json.dumps(certificate))
    info = v.subjects.get(successor, tenant="acme")
    assert info.restricted and info.jurisdiction == "US-CA"
    kept = v.get(DANA, "customers", ids[0], purpose="dsar_fulfilment")
    assert kept.subject_id == successor
    assert dict(kept.data) == {"full_name": ZED["full_name"], "national_id": "123456789"}
    with pytest.raises(SubjectRestricted):  # storage and security only
        v.get(CRM, "customers", ids[0], purpose="account_management")
    with pytest.raises(KeyDestroyed):
        v.put(CRM, "customers", {"full_name": "x"}, purpose="account_management",
              subject_id=zed)
    v = copy.restore(v, zed)
    try:
        with pytest.raises(KeyDestroyed):  # the old copy's rows are under the old key
            v.get(DANA, "customers", ids[0], purpose="dsar_fulfilment")
    finally:
        v.close()


def test_erasure_under_a_legal_hold_keeps_everything(dv: Vault) -> None:
    zed, ids = _person(dv, ZED, "US-CA")
    hold = dv.holds.place("acme", zed, reason="LIT-2026-001", actor=DANA)
    request = _verified(dv, "delete", zed)
    done = dv.dsar.process(DANA, request.id, tenant="acme")
    assert done.state is RequestState.PARTIALLY_COMPLETED
    assert done.result["certificate"]["kept"] == [
        {"scope": "*", "reason": "legal_hold", "holds": [hold.id]}]
    assert dv.get(DANA, "customers", ids[0], purpose="dsar_fulfilment").data


# ---------------------------------------------------------------- other kinds


def test_rectification_goes_through_the_data_path(dv: Vault) -> None:
    zed, ids = _person(dv, ZED, "US-CA")
    request = _verified(dv, "correct", zed)
    with pytest.raises(InvalidData):
        dv.dsar.process(DANA, request.id, tenant="acme")
    done = dv.dsar.process(DANA, request.id, tenant="acme",
                           changes={ids[0]: {"postal_address": "2 New Street, Oakland"}})
    assert done.state is RequestState.COMPLETED
    assert done.result["rectified"] == {ids[0]: ["postal_address"]}
    assert "newsletter_service" in done.result["recipients"]
    record = dv.get(CRM, "customers", ids[0], purpose="account_management")
    assert record.data["postal_address"] == "2 New Street, Oakland"
    _assert_no_pii(_dump(dv).replace("New Street", ""))


def test_restriction_restricts_the_subject(dv: Vault) -> None:
    zed = _person(dv, {**ZED, "country": "DE"}, "DE")[0]
    request = dv.dsar.submit(DANA, "restrict", tenant="acme", subject_id=zed)
    request = dv.dsar.verify(DANA, request.id, tenant="acme", accept_as_known="signed_in")
    done = dv.dsar.process(DANA, request.id, tenant="acme")
    assert done.state is RequestState.COMPLETED
    assert dv.subjects.get(zed, tenant="acme").restriction_reason == "dsar_restriction"


def test_objection_stops_a_legitimate_interest_purpose(dv: Vault) -> None:
    """GDPR Art. 21: after the objection, sales outreach to the subject is refused,
    unless the DPO recorded compelling grounds for that purpose."""
    zed, ids = _person(dv, {**ZED, "country": "DE"}, "DE")
    assert dv.get(SALLY, "customers", ids[0], purpose="sales_outreach").data
    request = dv.dsar.submit(DANA, "object", tenant="acme", subject_id=zed)
    request = dv.dsar.verify(DANA, request.id, tenant="acme", accept_as_known="signed_in")
    done = dv.dsar.process(DANA, request.id, tenant="acme",
                           exemptions={"analytics": "compelling_grounds"})
    assert done.result["withdrawn"] == ["sales_outreach"]
    with pytest.raises(ConsentRequired):
        dv.get(SALLY, "customers", ids[0], purpose="sales_outreach")


def test_explanation_states_the_processing_rules(dv: Vault, tmp_path: Path) -> None:
    zed = _person(dv, {**ZED, "country": "CN"}, "CN")[0]
    request = dv.dsar.submit(DANA, "explanation", tenant="acme", subject_id=zed)
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"email": ZED["email"]})
    done = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    statement = json.loads(Path(done.result["explanation_file"]).read_text())
    assert statement["regime"] == "pipl"
    assert {p["purpose"] for p in statement["purposes"]} >= {"marketing", "dsar_fulfilment"}
    _assert_no_pii(json.dumps(statement))


# ---------------------------------------------------------------- listings and report


def test_listings_and_report(dv: Vault, clock: FixedClock, tmp_path: Path) -> None:
    zed, _ = _person(dv, ZED, "US-CA")
    on_time = _verified(dv, "know", zed)
    dv.dsar.process(DANA, on_time.id, tenant="acme", out=tmp_path)
    late = dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE")
    assert [r.id for r in dv.dsar.list(DANA, tenant="acme", due_within=31)] == [late.id]
    assert dv.dsar.list(DANA, tenant="acme", overdue=True) == []
    clock.set(dt.datetime(2026, 4, 10, 9, tzinfo=dt.UTC))
    assert [r.id for r in dv.dsar.list(DANA, tenant="acme", overdue=True)] == [late.id]
    assert [r.id for r in dv.dsar.list(DANA, tenant="acme", state="completed")] == [on_time.id]
    dv.dsar.reject(DANA, late.id, tenant="acme", reason_code="identity_not_verified")
    report = dv.dsar.report(Actor("colin", "acme"), tenant="acme")
    by = {(g.regime, g.kind): g for g in report.groups}
    assert by[("ccpa", "access")].on_time == 1 and by[("gdpr", "access")].late == 1
    assert report.on_time_rate == 0.5
    know = next(m for m in report.ccpa_metrics if m["request"] == "know")
    assert know["received"] == 1 and know["complied_in_whole_or_part"] == 1
    for rendered in (report.to_json(), report.to_csv(), report.log_csv(), report.to_html()):
        _assert_no_pii(rendered)
    assert "identity_not_verified" in report.log_csv()


# ---------------------------------------------------------------- the request log's retention


def test_request_log_is_purged_after_its_retention(dv: Vault, clock: FixedClock,
                                                   tmp_path: Path) -> None:
    """A closed CCPA request goes 24 months after closing, with its history and the
    key of its sealed identifiers; an export bundle goes after export_retention; an
    open request stays, and the database refuses to delete an open one."""
    zed, _ = _person(dv, ZED, "US-CA")
    access = _verified(dv, "know", zed)
    access = dv.dsar.process(DANA, access.id, tenant="acme", out=tmp_path)
    closed = dv.dsar.submit(DANA, "delete", tenant="acme", jurisdiction="US-CA",
                            identifiers={"email": "someone@example.com"})
    assert dv.dsar.requester_contact(DANA, closed.id, tenant="acme")["identifiers"] == {
        "email": "someone@example.com"}
    dv.dsar.reject(DANA, closed.id, tenant="acme", reason_code="identity_not_verified")
    still_open = dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE")
    with pytest.raises(DBAPIError), dv.engine.begin() as conn:
        conn.execute(text("DELETE FROM dsar_requests WHERE id = :i"), {"i": still_open.id})
    clock.advance(dt.timedelta(days=31))
    assert dv.dsar.purge(DANA).exports == 1
    assert not Path(access.result["export"]).exists()
    assert dv.dsar.get(DANA, access.id, tenant="acme").result["export_deleted"] is True
    clock.advance(dt.timedelta(days=730))
    result = dv.dsar.purge(DANA)
    assert result.requests == 2
    for gone in (access.id, closed.id):
        with pytest.raises(NotFound):
            dv.dsar.get(DANA, gone, tenant="acme")
    assert dv.dsar.get(DANA, still_open.id, tenant="acme").is_open
    with dv.engine.connect() as conn:
        left = conn.execute(text("SELECT DISTINCT request_id FROM dsar_events")).scalars().all()
    assert left == [still_open.id]
    assert dv.keystore.is_destroyed("acme", f"dsar.{closed.id}")

    with pytest.raises(AccessDenied):
        dv.dsar.purge(SALLY)


def test_export_says_where_each_record_came_from(dv: Vault, tmp_path: Path) -> None:
    """put(source=...) is stored with the record and answered in the export (GDPR
    Art. 15(1)(g)); a source that is not a code is refused."""
    first = dv.put(CRM, "customers", ZED, purpose="account_management",
                   jurisdiction="US-CA", source="web_form")
    zed = dv.get(CRM, "customers", first, purpose="account_management").subject_id
    dv.put(CRM, "customers", {"full_name": ZED["full_name"]}, purpose="account_management",
           subject_id=zed, source="sales_call")
    with pytest.raises(InvalidData):
        dv.put(CRM, "customers", {"full_name": "x"}, purpose="account_management",
               source="typed in by Zebulon")
    request = _verified(dv, "know", zed)
    done = dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
    records = json.loads((Path(done.result["export"]) / "records.json").read_text())
    assert sorted(r["source"] for r in records["customers"]) == ["sales_call", "web_form"]


def test_verified_subjects_regime_replaces_the_stated_one(dv: Vault) -> None:
    """Received unmatched as from Germany; the evidence verifies a Californian: the
    request moves to the CCPA, its clocks recomputed from receipt."""
    zed, _ = _person(dv, ZED, "US-CA")
    _person(dv, BEA, "US-CA")
    request = dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE",
                             identifiers={"phone": ZED["phone"], "email": BEA["email"]})
    assert (request.regime, request.subject_id, request.due_on) == ("gdpr", None,
                                                                   dt.date(2026, 4, 2))
    # One point would do under the GDPR, not under the subject's own CCPA tier.
    request = dv.dsar.verify(DANA, request.id, tenant="acme",
                             evidence={"email": ZED["email"]})
    assert request.state is RequestState.RECEIVED and request.subject_id is None
    assert "tier_of:ccpa" in (request.history[-1].reason or "")
    request = dv.dsar.verify(DANA, request.id, tenant="acme", declaration="d-2",
                             evidence={"email": ZED["email"], "phone": ZED["phone"],
                                       "birth_date": ZED["birth_date"]})
    assert request.state is RequestState.IDENTITY_VERIFIED and request.subject_id == zed
    assert (request.regime, request.right) == ("ccpa", "access")
    assert request.due_on == dt.date(2026, 4, 16) and request.acknowledge_by is not None
    assert "regime:gdpr>ccpa" in (request.history[-1].reason or "")


def test_no_pii_reaches_the_logs(dv: Vault, tmp_path: Path) -> None:
    """A whole flow (submit with identifiers, failed and good verification, export,
    erasure) logs nothing of the subject's data."""
    import structlog

    zed, _ = _person(dv, ZED, "US-CA")
    with structlog.testing.capture_logs() as logs:
        request = dv.dsar.submit(CRM, "access", tenant="acme",
                                 identifiers={"email": ZED["email"], "phone": ZED["phone"]})
        dv.dsar.verify(DANA, request.id, tenant="acme",
                       evidence={"full_name": "Zebulon Wrongname"})
        dv.dsar.verify(DANA, request.id, tenant="acme", declaration="d-9",
                       evidence={"email": ZED["email"], "phone": ZED["phone"],
                                 "full_name": ZED["full_name"]})
        dv.dsar.process(DANA, request.id, tenant="acme", out=tmp_path)
        erase = _verified(dv, "delete", zed)
        dv.dsar.process(DANA, erase.id, tenant="acme", out=tmp_path)
    _assert_no_pii(repr(logs))
    _assert_no_pii(_dump(dv))


# ---------------------------------------------------------------- found by the gateway's tests


def test_reading_requests_is_audited(dv: Vault) -> None:
    """Reading or listing requests (who asked for what about whom) leaves an entry."""
    request = dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE")
    dv.dsar.get(DANA, request.id, tenant="acme")
    dv.dsar.list(DANA, tenant="acme")
    with dv.engine.connect() as conn:
        reasons = conn.execute(select(AuditEntryRow.reason).where(
            AuditEntryRow.action == "dsar.read").order_by(AuditEntryRow.seq)).scalars().all()
    assert reasons == [f"request:{request.id}", "listed:1"]


def test_an_acknowledgement_in_the_future_or_before_receipt_is_refused(
        dv: Vault, clock: FixedClock) -> None:
    request = dv.dsar.submit(DANA, "know", tenant="acme", jurisdiction="US-CA")
    for at in (T0 + dt.timedelta(days=400), T0 - dt.timedelta(days=3)):
        with pytest.raises(InvalidData):
            dv.dsar.acknowledge(DANA, request.id, tenant="acme", at=at)
    assert dv.dsar.get(DANA, request.id, tenant="acme").acknowledged_at is None


@pytest.mark.parametrize("when", [
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-12))),
])
def test_a_time_far_out_of_range_is_invalid_data(dv: Vault, when: dt.datetime) -> None:
    with pytest.raises(InvalidData):
        dv.dsar.submit(DANA, "access", tenant="acme", jurisdiction="DE", received_at=when,
                       received_reason="letter_opened_late")
