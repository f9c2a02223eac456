"""Retention on a real vault (SQLite and PostgreSQL): expiry, sweeps, holds, shredding."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.helpers import stepped_up
from vault import AccessDenied, Actor, FixedClock, KeyDestroyed, LegalHoldActive, NotFound, Vault
from vault.errors import InvalidData
from vault.retention.expiry import ANONYMOUS_SUBJECT
from vault.retention.tables import RetentionRow
from vault.store.models import AuditEntryRow, BlindIndexRow, RecordRow

from ..conftest import ROLE_USERS

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
CRM = stepped_up(Actor("crm", "acme"))  # its deletes are erasures: a second factor
DPO = Actor("dana", "acme")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def rv(settings: Any, clock: FixedClock) -> Iterator[Vault]:
    """A vault on a fixed clock (starting 2020-01-01), demo roles in tenant acme;
    its audit log must verify when the test ends."""
    v = Vault.init(settings=settings, clock=clock)
    for user, role in ROLE_USERS.items():
        v.roles.assign(user, role, tenant="acme")
    try:
        yield v
        report = v.audit.verify()  # chains, erasures and record versions
        assert report.ok, report
    finally:
        v.close()


def put(v: Vault, data: dict[str, Any], *, subject: str | None = None,
        jurisdiction: str = "US") -> str:
    return v.put(CRM, "customers", data, purpose="account_management", subject_id=subject,
                 jurisdiction=jurisdiction)


def expiry(v: Vault, rid: str) -> Any:
    with v.engine.connect() as conn:
        return conn.execute(select(RetentionRow.__table__).where(
            RetentionRow.__table__.c.record_id == rid)).first()


def record_ids(v: Vault) -> set[str]:
    with v.engine.connect() as conn:
        return set(conn.execute(select(RecordRow.__table__.c.id)).scalars())


def sweep_entries(v: Vault) -> list[Any]:
    t = AuditEntryRow.__table__
    with v.engine.connect() as conn:
        return list(conn.execute(select(t).where(t.c.action == "retention.sweep")
                                 .order_by(t.c.seq)))


def at(years: int = 0, days: int = 0) -> dt.datetime:
    return T0.replace(year=T0.year + years) + dt.timedelta(days=days)


# ---------------------------------------------------------------- expiry on the data path


def test_every_write_carries_its_expiry_and_events_move_it(rv: Vault, clock: FixedClock) -> None:
    """put computes the next expiry per regime; update and record_event recompute it."""
    eu = put(rv, {"full_name": "Ana", "email": "ana@example.com", "device_info": {"os": "x"}},
             subject="s-eu", jurisdiction="DE")
    cn = put(rv, {"full_name": "Li", "device_info": {"os": "y"}}, subject="s-cn",
             jurisdiction="CN")
    assert (expiry(rv, eu).category, expiry(rv, eu).expires_at) == ("technical", at(1, 31))
    assert (expiry(rv, cn).category, expiry(rv, cn).expires_at) == ("technical",
                                                                    at(0, 182))
    # removing the device info leaves contact (3 years) as the next to go
    rv.update(CRM, "customers", eu, {"device_info": None}, purpose="account_management")
    assert (expiry(rv, eu).category, expiry(rv, eu).expires_at) == ("contact", at(3))
    # a later interaction pushes it back; an earlier one does not pull it forward
    clock.set(at(2))
    assert rv.retention.record_event("acme", "s-eu", "last_interaction", actor=CRM) == 1
    assert expiry(rv, eu).expires_at == at(5)
    rv.retention.record_event("acme", "s-eu", "last_interaction", at(1))
    assert expiry(rv, eu).expires_at == at(5)
    # a contract end sooner than that wins (earliest rule)
    rv.retention.record_event("acme", "s-eu", "contract_end", at(1, 10), actor=DPO)
    assert expiry(rv, eu).expires_at == at(4, 10)
    rv.retention.clear_event("acme", "s-eu", "contract_end")
    assert expiry(rv, eu).expires_at == at(5)
    # the record's purge time: identity, 6 years after the last interaction
    assert expiry(rv, eu).purge_at == at(8) and expiry(rv, eu).shred_at == at(8)


def test_record_event_refuses_bad_input_and_unauthorised_actors(rv: Vault) -> None:
    """Unknown events, naive times and unknown subjects are refused; so are actors
    without retention.event (audited)."""
    put(rv, {"full_name": "Ana"}, subject="s1")
    with pytest.raises(InvalidData):
        rv.retention.record_event("acme", "s1", "birthday")
    with pytest.raises(InvalidData):
        rv.retention.record_event("acme", "s1", "created")
    with pytest.raises(InvalidData):
        rv.retention.record_event("acme", "s1", "contract_end", dt.datetime(2021, 1, 1))
    with pytest.raises(NotFound):
        rv.retention.record_event("acme", "nobody", "contract_end")
    with pytest.raises(AccessDenied):
        rv.retention.record_event("acme", "s1", "contract_end", actor=Actor("sam", "acme"))


# ---------------------------------------------------------------- the sweep


def test_a_tampered_record_due_for_pruning_is_deleted_not_resealed(
        rv: Vault, clock: FixedClock) -> None:
    """A prune re-seals the record it shortens; a record whose seal does not vouch
    for it (here: an older envelope of a kept field written back) is deleted
    instead, so the sweep never launders a tampered row into a valid one."""
    from vault.crypto.framing import decode_envelopes, encode_envelopes

    rid = put(rv, {"full_name": "B", "email": "b@example.com", "device_info": {"o": 2}},
              subject="s-pruned")
    good = put(rv, {"full_name": "G", "email": "g@example.com", "device_info": {"o": 3}},
               subject="s-good")
    with rv.engine.connect() as conn:
        old_email = decode_envelopes(conn.execute(text(
            "SELECT envelopes FROM records WHERE id = :id"), {"id": rid}).scalar_one())["email"]
    clock.set(at(4))
    rv.update(CRM, "customers", rid, {"email": "new@example.com"}, purpose="account_management")
    for subject in ("s-pruned", "s-good"):
        rv.retention.record_event("acme", subject, "last_interaction")
    with rv.engine.begin() as conn:
        envelopes = decode_envelopes(conn.execute(text(
            "SELECT envelopes FROM records WHERE id = :id"), {"id": rid}).scalar_one())
        envelopes["email"] = old_email
        conn.execute(text("UPDATE records SET envelopes = :e WHERE id = :id"),
                     {"e": encode_envelopes(envelopes), "id": rid})
    clock.set(at(6, 1))
    report = rv.retention.sweep()
    assert (report.records_pruned, report.records_deleted) == (1, 1)
    assert record_ids(rv) == {good}
    kept = rv.get(DPO, "customers", good, purpose="dsar_fulfilment")
    assert set(kept.data) == {"full_name", "email"}


def test_sweep_removes_exactly_what_expired(rv: Vault, clock: FixedClock) -> None:
    """Expired categories go (ciphertexts and blind indexes), pending ones stay, the
    rest is untouched; a dry run counts the same and changes nothing."""
    ids = {
        # no interaction after creation: every category has expired after 6 years
        "gone": put(rv, {"full_name": "A", "email": "a@example.com", "device_info": {"o": 1}},
                    subject="s-gone"),
        # an interaction 4 years in: only technical (13 months from creation) expires
        "pruned": put(rv, {"full_name": "B", "email": "b@example.com",
                           "device_info": {"o": 2}}, subject="s-pruned"),
    }
    clock.set(at(4))
    rv.retention.record_event("acme", "s-pruned", "last_interaction")
    ids["fresh"] = put(rv, {"full_name": "C", "email": "c@example.com"}, subject="s-fresh")
    rv.update(CRM, "customers", ids["fresh"], {"phone": "+14155550100"},
              purpose="account_management")
    clock.set(at(6, 1))
    before = record_ids(rv)
    dry = rv.retention.sweep(dry_run=True)
    assert record_ids(rv) == before
    assert (dry.records_deleted, dry.records_pruned, dry.status) == (1, 1, "dry_run")
    report = rv.retention.sweep(batch_size=10)
    assert (report.records_deleted, report.records_pruned) == (dry.records_deleted,
                                                               dry.records_pruned)
    assert record_ids(rv) == {ids["pruned"], ids["fresh"]}
    pruned = rv.get(DPO, "customers", ids["pruned"], purpose="dsar_fulfilment")
    assert set(pruned.data) == {"full_name", "email"}      # device_info (13 months) gone
    fresh = rv.get(DPO, "customers", ids["fresh"], purpose="dsar_fulfilment")
    assert set(fresh.data) == {"full_name", "email", "phone"}
    assert rv.find(CRM, "customers", purpose="account_management", email="a@example.com") == []
    with rv.engine.connect() as conn:
        tokens = conn.execute(select(BlindIndexRow.__table__.c.record_id)).scalars().all()
    assert ids["gone"] not in tokens
    # the subject whose identity (a shred category) expired and who has nothing left
    assert rv.keystore.is_destroyed("acme", "s-gone")
    assert not rv.keystore.is_destroyed("acme", "s-pruned")
    again = rv.retention.sweep()
    assert again.records_processed == 0 and again.subjects_shredded == 0


def test_each_batch_is_one_audit_entry_naming_its_records(rv: Vault, clock: FixedClock) -> None:
    """Seven expired records in batches of three: three entries, every id named once."""
    ids = [put(rv, {"full_name": f"N{i}", "device_info": {"i": i}}, subject=f"b{i}")
           for i in range(7)]
    keep = put(rv, {"full_name": "Keep", "device_info": {"i": 9}}, subject="b-keep")
    rv.retention.record_event("acme", "b-keep", "last_interaction", at(5))
    clock.set(at(6, 1))        # identity (6 years) and technical expired for b0..b6
    report = rv.retention.sweep(batch_size=3)
    assert report.batches == 3 and report.records_deleted == 7 and report.records_pruned == 1
    entries = sweep_entries(rv)
    named = [rid for e in entries for rid in json.loads(e.record_ids)]
    assert [len(json.loads(e.record_ids)) for e in entries] == [3, 3, 2]
    assert sorted(named) == sorted([*ids, keep])
    assert all(e.actor == "system" and e.tenant == "acme" for e in entries)
    assert all(report.run_id in e.reason for e in entries)
    run = rv.retention.run(report.run_id)
    assert (run.status, run.batches, run.records_deleted, run.subjects_shredded) == (
        "completed", 3, 7, 7)


def test_anonymise_unlinks_what_is_left(rv: Vault, clock: FixedClock) -> None:
    """When only an anonymising category's internal fields are left, the record is
    re-keyed away from its subject, and the subject can be shredded."""
    rid = put(rv, {"full_name": "Ana", "preferred_language": "de", "country": "DE"},
              subject="s-anon")
    clock.set(at(6, 1))
    report = rv.retention.sweep()
    assert report.records_anonymised == 1 and report.subjects_shredded == 1
    rec = rv.get(Actor("andy", "acme"), "customers", rid, purpose="analytics")
    assert rec.data == {"preferred_language": "de"} and rec.subject_id == ANONYMOUS_SUBJECT
    assert rv.subject_records("acme", "s-anon") == []
    assert expiry(rv, rid) is None
    with pytest.raises(InvalidData):
        rv.keys.destroy(ANONYMOUS_SUBJECT, tenant="acme")


def test_anonymise_batch_with_lost_keys_and_damaged_envelopes(rv: Vault,
                                                              clock: FixedClock) -> None:
    """In one batch: records whose subject's key is still there are anonymised with
    their kept value intact; a record whose subject's key was destroyed, or whose
    envelopes were damaged, cannot be re-keyed and is deleted instead. The keys are
    loaded for the whole batch at once, so one lost key must not spoil the others."""
    langs = {"a1": "de", "a2": "en", "lost": "fr", "a3": "it", "damaged": "es", "a4": "pt"}
    ids = {s: put(rv, {"full_name": f"N-{s}", "preferred_language": lang}, subject=s)
           for s, lang in langs.items()}
    assert rv.keystore.destroy("acme", "lost")
    with rv.engine.begin() as conn:
        t = RecordRow.__table__
        env = bytearray(conn.execute(select(t.c.envelopes).where(
            t.c.id == ids["damaged"])).scalar_one())
        env[-1] ^= 0x01
        conn.execute(t.update().where(t.c.id == ids["damaged"]).values(envelopes=bytes(env)))
    clock.set(at(6, 1))
    report = rv.retention.sweep()
    assert (report.records_anonymised, report.records_deleted) == (4, 2)
    assert record_ids(rv) == {ids[s] for s in ("a1", "a2", "a3", "a4")}
    for s in ("a1", "a2", "a3", "a4"):
        rec = rv.get(Actor("andy", "acme"), "customers", ids[s], purpose="analytics")
        assert rec.data == {"preferred_language": langs[s]}
        assert rec.subject_id == ANONYMOUS_SUBJECT


def test_anonymise_keeps_the_search_tokens_of_each_records_kept_fields(
        settings: Any, tmp_path: Path) -> None:
    """Records anonymised in one batch lose the blind-index tokens of the fields *they*
    lose. A field kept by one record (its category anonymises under that subject's
    regime) but removed from another (deleted under the other regime) used to lose its
    tokens in both, as the batch deleted the union of the removed fields from every
    record that lost any: the anonymous record could no longer be found by it."""
    import shutil

    policies = tmp_path / "policies-searchable"
    shutil.copytree(settings.resolved_policies, policies)
    schema = policies / "collections" / "customers.toml"
    text_ = schema.read_text(encoding="utf-8")
    old = '[fields.preferred_language]\ntype = "string"\nclassification = "internal"\n'
    assert old in text_
    schema.write_text(text_.replace(old, old + "searchable = true\n", 1) + (
        '\n[fields.stat_bucket]\ntype = "string"\nclassification = "internal"\n'
        'category = "statistics"\nmask = "none"\nmax_length = 8\n'), encoding="utf-8")
    schedule = policies / "retention.toml"
    schedule.write_text(schedule.read_text(encoding="utf-8") + (
        '\n[[categories.preference.pipl]]\nperiod = "P3Y"\nfrom = "last_interaction"\n'
        'action = "delete"\nbasis = "test: deleted under PIPL"\n'
        '\n[[categories.statistics.default]]\nperiod = "P3Y"\nfrom = "last_interaction"\n'
        'action = "anonymise"\nbasis = "test: statistics"\n'), encoding="utf-8")
    clock = FixedClock(T0)
    with Vault.init(settings=settings.model_copy(update={"policies": policies}),
                    clock=clock) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
        keeps = put(v, {"full_name": "Ana", "preferred_language": "de"}, subject="s-us")
        loses = put(v, {"full_name": "Li", "preferred_language": "zh", "stat_bucket": "b1"},
                    subject="s-cn", jurisdiction="CN")
        b = BlindIndexRow.__table__
        with v.engine.connect() as conn:
            assert set(conn.execute(select(b.c.record_id, b.c.field)).all()) >= {
                (keeps, "preferred_language"), (loses, "preferred_language")}
        clock.set(at(6, 1))
        assert v.retention.sweep().records_anonymised == 2
        with v.engine.connect() as conn:
            tokens = set(conn.execute(select(b.c.record_id, b.c.field)).all())
        assert tokens == {(keeps, "preferred_language")}
        assert v.audit_log.verify().ok


def test_consent_withdrawal_removes_marketing_only(rv: Vault, clock: FixedClock) -> None:
    """consent_withdrawn ends the marketing category at the next sweep."""
    rid = put(rv, {"full_name": "Ana", "email": "ana@example.com",
                   "marketing_segment": "vip"}, subject="s-mk")
    clock.set(at(0, 30))
    rv.retention.record_event("acme", "s-mk", "consent_withdrawn", actor=DPO)
    plan = rv.retention.plan()
    assert [(e.record_id, e.category, e.fields) for e in plan.entries] == [
        (rid, "marketing", ("marketing_segment",))]
    assert rv.retention.sweep().records_pruned == 1
    assert set(rv.get(DPO, "customers", rid, purpose="dsar_fulfilment").data) == {
        "full_name", "email"}


def test_shred_waits_for_the_subjects_last_record(rv: Vault, clock: FixedClock) -> None:
    """A subject is crypto-shredded only once none of its records remains."""
    put(rv, {"full_name": "Ana"}, subject="s-two")
    clock.set(at(4))
    later = put(rv, {"full_name": "Ana", "email": "ana@example.com"}, subject="s-two")
    clock.set(at(6, 1))
    first = rv.retention.sweep()
    assert first.records_deleted == 1 and first.subjects_shredded == 0
    assert not rv.keystore.is_destroyed("acme", "s-two")
    clock.set(at(10, 1))
    second = rv.retention.sweep()
    assert second.records_deleted == 1 and second.subjects_shredded == 1
    assert rv.keystore.is_destroyed("acme", "s-two")
    assert later not in record_ids(rv)


# ---------------------------------------------------------------- legal holds


def test_holds_stop_sweeps_deletes_and_shredding(rv: Vault, clock: FixedClock) -> None:
    """Held data is skipped (and counted) by the sweeper, and delete and destroy
    refuse; after the hold is lifted the sweeper removes it."""
    held = put(rv, {"full_name": "H", "email": "h@example.com"}, subject="s-held")
    free = put(rv, {"full_name": "F", "email": "f@example.com"}, subject="s-free")
    hold = rv.holds.place("acme", "s-held", reason="LIT-2026-014", actor=DPO)
    with pytest.raises(LegalHoldActive) as info:
        rv.delete(CRM, "customers", held, purpose="account_management")
    assert info.value.hold_ids == (hold.id,) and "LIT" not in info.value.message
    with pytest.raises(LegalHoldActive):
        rv.keys.destroy("s-held", tenant="acme")
    clock.set(at(6, 1))
    report = rv.retention.sweep()
    assert (report.records_deleted, report.held) == (1, 1)
    assert record_ids(rv) == {held}
    assert [e.held for e in rv.retention.plan().entries if e.record_id == held] == [True, True]
    lifted = rv.holds.lift(hold.id, actor=Actor("colin", "acme"))
    assert lifted.lifted_by == "colin" and rv.holds.list(tenant="acme") == []
    assert len(rv.holds.list(tenant="acme", active_only=False)) == 1
    assert rv.retention.sweep().records_deleted == 1
    assert record_ids(rv) == set() and rv.keystore.is_destroyed("acme", "s-held")
    assert free not in record_ids(rv)
    t = AuditEntryRow.__table__
    with rv.engine.connect() as conn:
        actions = conn.execute(select(t.c.action, t.c.decision, t.c.reason).where(
            t.c.action.in_(["holds.place", "holds.lift", "keys.destroy", "delete"])
        ).order_by(t.c.seq)).all()
    assert [(a, d) for a, d, _ in actions] == [
        ("holds.place", "allow"), ("delete", "deny"), ("keys.destroy", "deny"),
        ("holds.lift", "allow")]
    assert all("LIT" not in (r or "") for _, _, r in actions)


def test_hold_placed_between_a_batch_and_its_shred_keeps_the_key(rv: Vault,
                                                                  clock: FixedClock) -> None:
    """A subject whose last record a batch removed, then a hold placed before the run
    destroys the queued keys: that key survives (the subject waits in the queue), the
    others' keys go; once the hold is lifted the next sweep shreds it, and every
    subject is named by exactly one shred entry."""
    put(rv, {"full_name": "Held later"}, subject="s-late")
    put(rv, {"full_name": "Free"}, subject="s-free")
    put(rv, {"full_name": "Free too"}, subject="s-free2")
    clock.set(at(6, 1))
    placed = []

    def hold_after_first_batch(done: int, total: int) -> None:
        if done and not placed:   # the batch has committed; keys are destroyed later
            placed.append(rv.holds.place("acme", "s-late", reason="LIT-9", actor=DPO))

    report = rv.retention.sweep(batch_size=10, progress=hold_after_first_batch)
    assert placed and (report.records_deleted, report.subjects_shredded) == (3, 2)
    assert not rv.keystore.is_destroyed("acme", "s-late")
    assert rv.keystore.is_destroyed("acme", "s-free") and rv.keystore.is_destroyed(
        "acme", "s-free2")
    assert rv.retention.sweep().subjects_shredded == 0          # still held
    assert not rv.keystore.is_destroyed("acme", "s-late")
    rv.holds.lift(placed[0].id, actor=DPO)
    assert rv.retention.sweep().subjects_shredded == 1
    assert rv.keystore.is_destroyed("acme", "s-late")
    assert rv.retention.sweep().subjects_shredded == 0
    t = AuditEntryRow.__table__
    with rv.engine.connect() as conn:
        named = [p for (subjects,) in conn.execute(
            select(t.c.subjects).where(t.c.action == "retention.shred"))
            for p in json.loads(subjects)]
    assert sorted(named) == sorted(rv.pseudonym("acme", s)
                                   for s in ("s-late", "s-free", "s-free2"))
    with rv.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM retention_shred_queue")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM retention_shred_batches")).scalar() == 0


def test_queued_subject_with_a_new_record_keeps_its_key(rv: Vault, clock: FixedClock) -> None:
    """A subject queued for shredding while held, who then gets a new record: lifting
    the hold must not shred the key that the new record is encrypted under."""
    put(rv, {"full_name": "Returning"}, subject="s-back")
    clock.set(at(6, 1))
    placed = []

    def hold_after_first_batch(done: int, total: int) -> None:
        if done and not placed:
            placed.append(rv.holds.place("acme", "s-back", reason="LIT-10", actor=DPO))

    rv.retention.sweep(batch_size=10, progress=hold_after_first_batch)
    assert placed and not rv.keystore.is_destroyed("acme", "s-back")  # queued, held
    again = put(rv, {"full_name": "Returning", "email": "back@example.com"}, subject="s-back")
    rv.holds.lift(placed[0].id, actor=DPO)
    assert rv.retention.sweep().subjects_shredded == 0
    assert not rv.keystore.is_destroyed("acme", "s-back")
    assert rv.get(CRM, "customers", again, purpose="account_management").data["email"] == (
        "back@example.com")
    with rv.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM retention_shred_queue")).scalar() == 0
    clock.set(at(12, 2))  # the new record expires in turn: now the subject goes
    assert rv.retention.sweep().subjects_shredded == 1
    assert rv.keystore.is_destroyed("acme", "s-back")


def test_tenant_hold_and_hold_end_date(rv: Vault, clock: FixedClock) -> None:
    """A tenant-wide hold covers every subject; a hold with an end date stops by itself."""
    rid = put(rv, {"full_name": "T", "email": "t@example.com"}, subject="s-t")
    rv.holds.place("acme", reason="AUDIT-7", until=at(6, 10))
    assert rv.holds.is_held("acme", "s-t") and rv.holds.is_held("acme")
    clock.set(at(6, 1))
    assert rv.retention.sweep().held == 1 and rid in record_ids(rv)
    with pytest.raises(LegalHoldActive):
        rv.delete(CRM, "customers", rid, purpose="account_management")
    clock.set(at(6, 11))
    assert not rv.holds.is_held("acme", "s-t")
    assert rv.retention.sweep().records_deleted == 1


def test_hold_placement_is_authorised_and_validated(rv: Vault) -> None:
    """Only holds.manage roles place holds; reasons and dates are checked; holds are
    never deleted from the table."""
    with pytest.raises(AccessDenied):
        rv.holds.place("acme", "s1", reason="X-1", actor=Actor("ada", "acme"))
    with pytest.raises(AccessDenied):
        rv.holds.place("acme", "s1", reason="X-1", actor=Actor("dana", "other"))
    with pytest.raises(InvalidData):
        rv.holds.place("acme", "s1", reason="")
    with pytest.raises(InvalidData):
        rv.holds.place("acme", "s1", reason="x" * 201)
    with pytest.raises(InvalidData):
        rv.holds.place("acme", "s1", reason="X-1", until=T0 - dt.timedelta(days=1))
    put(rv, {"full_name": "Held"}, subject="s1")
    hold = rv.holds.place("acme", "s1", reason="X-1")
    with pytest.raises(NotFound):
        rv.holds.lift("no-such-hold")
    rv.holds.lift(hold.id)
    with pytest.raises(NotFound):
        rv.holds.lift(hold.id)
    with pytest.raises(Exception, match="never deleted"), rv.engine.begin() as conn:
        conn.execute(text("DELETE FROM legal_holds"))


# ---------------------------------------------------------------- reports and bytes


def test_report_counts_backlog_upcoming_and_runs(rv: Vault, clock: FixedClock) -> None:
    """The summary counts expired, held and upcoming records and lists the runs."""
    put(rv, {"full_name": "A", "device_info": {"a": 1}}, subject="r1")
    put(rv, {"full_name": "B", "device_info": {"b": 1}}, subject="r2")
    rv.holds.place("acme", "r2", reason="R-1")
    clock.set(at(1, 20))                 # technical expires at 13 months: in 11 days
    rep = rv.retention.report()
    assert rep.upcoming[30] == {("technical", "delete"): 2} and rep.upcoming[7] == {}
    clock.set(at(1, 40))
    rv.retention.sweep(tenant="acme")      # a tenant's report lists its tenant's sweeps
    rep = rv.retention.report(actor=Actor("colin", "acme"), tenant="acme")
    assert (rep.expired_unheld, rep.expired_held, rep.active_holds) == (0, 1, 1)
    assert rep.runs[0].records_pruned == 1 and rep.runs[0].held == 1
    with pytest.raises(AccessDenied):
        rv.retention.report(actor=Actor("sam", "acme"), tenant="acme")


def test_report_of_a_tenant_lists_only_that_tenants_runs(rv: Vault, clock: FixedClock) -> None:
    """A tenant's report lists the sweeps limited to that tenant, not those of another
    tenant nor those of every tenant (their counts include other tenants' records);
    the report of every tenant lists them all."""
    put(rv, {"full_name": "A"}, subject="t1")
    clock.set(at(6, 1))
    everyone = rv.retention.sweep()
    acme = rv.retention.sweep(tenant="acme")
    other = rv.retention.sweep(tenant="other")
    assert rv.retention.run(acme.run_id).tenant == "acme"
    assert rv.retention.run(everyone.run_id).tenant is None
    rep = rv.retention.report(actor=Actor("colin", "acme"), tenant="acme")
    assert [r.id for r in rep.runs] == [acme.run_id]
    assert {r.id for r in rv.retention.report().runs} == {everyone.run_id, acme.run_id,
                                                          other.run_id}
    assert [r.id for r in rv.retention.runs(tenant="other")] == [other.run_id]


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_sqlite_sweep_leaves_no_bytes_behind(rv: Vault, clock: FixedClock) -> None:
    """After a sweep, no ciphertext of a deleted record is left in the database files."""
    rid = put(rv, {"full_name": "Gone", "support_notes": "n" * 400}, subject="s-bytes")
    with rv.engine.connect() as conn:
        blob = conn.execute(select(RecordRow.__table__.c.envelopes).where(
            RecordRow.__table__.c.id == rid)).scalar_one()
    clock.set(at(6, 1))
    assert rv.retention.sweep().records_deleted == 1
    home = rv.settings.home
    raw = b"".join(p.read_bytes() for p in home.glob("data.db*"))
    assert blob[-64:] not in raw and blob[40:104] not in raw


def test_read_of_a_shredded_subject_fails(rv: Vault, clock: FixedClock) -> None:
    """A subject shredded by the sweeper cannot be written again."""
    put(rv, {"full_name": "Z"}, subject="s-z")
    clock.set(at(6, 1))
    assert rv.retention.sweep().subjects_shredded == 1
    with pytest.raises(KeyDestroyed):
        put(rv, {"full_name": "Z"}, subject="s-z")


# ---------------------------------------------------------------- consent and jurisdiction wiring


def test_pipl_withdrawal_queues_proactive_deletion_and_regrant_cancels_it(
        rv: Vault, clock: FixedClock) -> None:
    """PIPL Art. 47: withdrawing marketing consent through the consent ledger makes the
    marketing data expire at once; consenting again before the sweep cancels it."""
    rid = put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
              jurisdiction="CN")
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    assert expiry(rv, rid).category != "marketing" or expiry(rv, rid).expires_at > at(1)
    clock.set(at(0, 10))
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert (expiry(rv, rid).category, expiry(rv, rid).expires_at) == ("marketing", at(0, 10))
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    assert rv.retention.sweep().records_pruned == 0
    clock.set(at(0, 20))
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert rv.retention.sweep().records_pruned == 1
    assert set(rv.get(DPO, "customers", rid, purpose="dsar_fulfilment").data) == {"full_name"}


def test_pipl_grant_of_another_purpose_keeps_the_queued_deletion(
        rv: Vault, clock: FixedClock) -> None:
    """A withdrawal of marketing queues its data's deletion (PIPL Art. 47); a later
    consent to another purpose (sale) is not a consent to marketing again and must not
    cancel it. Only once no general consent of the subject stays withdrawn is the
    deletion called off."""
    rid = put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
              jurisdiction="CN")
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    clock.set(at(0, 10))
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    rv.consent.grant("s-cn", "sale", tenant="acme", notice_id="data_sale", notice_version=1)
    assert (expiry(rv, rid).category, expiry(rv, rid).expires_at) == ("marketing", at(0, 10))
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    assert expiry(rv, rid).expires_at > at(1)
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert rv.retention.sweep().records_pruned == 1
    assert set(rv.get(DPO, "customers", rid, purpose="dsar_fulfilment").data) == {"full_name"}


def test_pipl_gpc_without_an_earlier_consent_deletes_nothing(
        rv: Vault, clock: FixedClock) -> None:
    """A GPC signal (an opt-out of sale and sharing) from a PIPL subject who never
    consented to sale or sharing ends no consent, so no data held on consent is
    queued for deletion: the marketing data the subject did consent to stays. It does
    not keep a later re-consent from calling off a real withdrawal's deletion either."""
    rid = put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
              jurisdiction="CN")
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    before = expiry(rv, rid)
    clock.set(at(0, 10))
    rv.consent.apply_gpc("s-cn", source="gateway", tenant="acme")
    assert expiry(rv, rid) == before
    assert rv.retention.sweep().records_pruned == 0
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert expiry(rv, rid).expires_at == at(0, 10)
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    assert expiry(rv, rid) == before
    assert rv.retention.sweep().records_pruned == 0
    rv.consent.grant("s-cn", "sale", tenant="acme", notice_id="data_sale", notice_version=1)
    rv.consent.apply_gpc("s-cn", source="gateway", tenant="acme")   # ends the sale consent
    assert expiry(rv, rid).expires_at == at(0, 10)


def test_pipl_a_repeated_withdrawal_does_not_postpone_the_queued_deletion(
        rv: Vault, clock: FixedClock) -> None:
    """A second withdrawal of a purpose already withdrawn (a repeated GPC signal, a form
    sent twice) ends no consent: the deletion the first withdrawal queued keeps its
    time (it used to move to the later withdrawal, postponing any rule with a period),
    and a withdrawal of another consent given later does not postpone it either."""
    rid = put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
              jurisdiction="CN")
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    rv.consent.grant("s-cn", "sale", tenant="acme", notice_id="data_sale", notice_version=1)
    clock.set(at(0, 10))
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert (expiry(rv, rid).category, expiry(rv, rid).expires_at) == ("marketing", at(0, 10))
    clock.set(at(0, 20))
    rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    assert expiry(rv, rid).expires_at == at(0, 10)
    clock.set(at(0, 30))
    rv.consent.apply_gpc("s-cn", source="gateway", tenant="acme")  # ends the sale consent
    assert expiry(rv, rid).expires_at == at(0, 10)


def test_pipl_a_grant_calls_off_only_a_deletion_it_answers(
        rv: Vault, clock: FixedClock) -> None:
    """Under a profile with erase_on_withdrawal, a consent to some purpose used to clear
    the subject's consent_withdrawn event whenever no ledger withdrawal was left, so it
    called off a withdrawal or objection the DPO had recorded (record_event), which the
    grant has nothing to do with. Only a grant that gives back an ended consent calls
    the deletion off."""
    rid = put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
              jurisdiction="CN")
    clock.set(at(0, 10))
    rv.retention.record_event("acme", "s-cn", "consent_withdrawn", actor=DPO)
    assert (expiry(rv, rid).category, expiry(rv, rid).expires_at) == ("marketing", at(0, 10))
    rv.consent.grant("s-cn", "sale", tenant="acme", notice_id="data_sale", notice_version=1)
    assert (expiry(rv, rid).category, expiry(rv, rid).expires_at) == ("marketing", at(0, 10))
    assert rv.retention.sweep().records_pruned == 1


def test_pipl_withdrawal_and_its_deletion_are_one_transaction(
        rv: Vault, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """If queueing the deletion fails, the withdrawal is not recorded either: a withdrawal
    in the ledger always has its deletion queued (no crash window between the two)."""
    put(rv, {"full_name": "Li", "marketing_segment": "vip"}, subject="s-cn",
        jurisdiction="CN")
    rv.consent.grant("s-cn", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)

    def fail(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("crash while queueing the deletion")

    monkeypatch.setattr(rv.retention, "consent_withdrawn", fail)
    with pytest.raises(RuntimeError):
        rv.consent.withdraw("s-cn", "marketing", tenant="acme")
    monkeypatch.undo()
    assert [e.kind for e in rv.consent.history("s-cn", tenant="acme")] == ["grant"]
    assert [s.status for s in rv.consent.state("s-cn", tenant="acme")] == ["granted"]


def test_gdpr_withdrawal_does_not_delete_by_itself(rv: Vault, clock: FixedClock) -> None:
    """Under the GDPR profile (erase_on_withdrawal off) a withdrawal stops the use
    but deletes nothing until an erasure request or the schedule says so."""
    rid = put(rv, {"full_name": "Ana", "marketing_segment": "vip"}, subject="s-de",
              jurisdiction="DE")
    rv.consent.grant("s-de", "marketing", tenant="acme", notice_id="marketing",
                     notice_version=1)
    before = expiry(rv, rid)
    rv.consent.withdraw("s-de", "marketing", tenant="acme")
    assert expiry(rv, rid) == before
    assert rv.retention.sweep().records_pruned == 0


def test_a_changed_schedule_applies_to_records_already_stored(
        settings: Any, tmp_path: Path) -> None:
    """Shortening a period in retention.toml (and restarting) moves the expiry of the
    records written before: the next plan and sweep go by the new schedule, once."""
    import shutil

    clock = FixedClock(T0)
    with Vault.init(settings=settings, clock=clock) as v:
        for user, role in ROLE_USERS.items():
            v.roles.assign(user, role, tenant="acme")
        rid = put(v, {"full_name": "Ana", "device_info": {"os": "x"}}, subject="s-1")
        assert expiry(v, rid).expires_at == at(1, 31)         # technical: 13 months
    policies = tmp_path / "policies-changed"
    shutil.copytree(settings.resolved_policies, policies)
    schedule = policies / "retention.toml"
    text = schedule.read_text(encoding="utf-8")
    old = 'period = "P13M"\nfrom = "created"'
    assert old in text
    schedule.write_text(text.replace(old, 'period = "P1M"\nfrom = "created"', 1),
                        encoding="utf-8")
    clock.set(at(0, 60))
    with Vault.open(settings=settings.model_copy(update={"policies": policies}),
                    clock=clock) as v:
        plan = v.retention.plan()
        assert [(e.record_id, e.category) for e in plan.entries] == [(rid, "technical")]
        assert expiry(v, rid).expires_at == at(0, 31)
        assert v.retention.sweep().records_pruned == 1
        assert set(v.get(DPO, "customers", rid, purpose="dsar_fulfilment").data) == {
            "full_name"}
        t = AuditEntryRow.__table__
        with v.engine.connect() as conn:
            reasons = conn.execute(select(t.c.reason).where(
                t.c.action == "retention.recompute")).scalars().all()
        assert reasons == ["schedule_changed:records:1"]
        assert v.audit_log.verify().ok
    with Vault.open(settings=settings.model_copy(update={"policies": policies}),
                    clock=clock) as v:
        v.retention.sweep()
        with v.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t).where(
                t.c.action == "retention.recompute")).scalar_one() == 1


def test_jurisdiction_change_recomputes_expiry(rv: Vault) -> None:
    """A customer moving from the EU to China gets PIPL's shorter periods at once."""
    rid = put(rv, {"full_name": "Ana", "device_info": {"os": "x"}}, subject="s-mv",
              jurisdiction="DE")
    assert expiry(rv, rid).expires_at == at(1, 31)          # GDPR default: 13 months
    rv.subjects.set_jurisdiction("s-mv", "CN", tenant="acme")
    assert expiry(rv, rid).expires_at == at(0, 182)         # PIPL: 6 months
