"""Property: the derived consent state always equals a replay of the ledger."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault import Actor, Vault
from vault.consent import ConsentKey, ConsentScope, ConsentStatus, replay

CRM = Actor("crm", "acme")
SUBJECTS = ("p0", "p1", "p2")
JURISDICTIONS = {"p0": "DE", "p1": "US-CA", "p2": "CN"}
# (operation, purpose, scope)
OPS = st.lists(st.tuples(
    st.sampled_from(SUBJECTS),
    st.sampled_from(["grant", "withdraw", "refuse", "expire", "gpc"]),
    st.sampled_from(["marketing", "sale"]),
    st.sampled_from([ConsentScope.GENERAL, ConsentScope.SENSITIVE]),
), min_size=1, max_size=12)
NOTICES = {("marketing", ConsentScope.GENERAL): "marketing",
           ("sale", ConsentScope.GENERAL): "data_sale",
           ("marketing", ConsentScope.SENSITIVE): "separate_sensitive"}
STATUS = {"grant": ConsentStatus.GRANTED, "withdraw": ConsentStatus.WITHDRAWN,
          "refuse": ConsentStatus.REFUSED, "expire": ConsentStatus.EXPIRED}


def _all_states(vault: Vault) -> dict[ConsentKey, Any]:
    return {s.key: s for sid in SUBJECTS for s in vault.consent.state(sid, tenant="acme")}


def _all_history(vault: Vault) -> list[Any]:
    return [e for sid in SUBJECTS for e in vault.consent.history(sid, tenant="acme")]


def test_state_table_equals_replay_of_ledger(vault: Vault) -> None:
    """After any sequence of grants, withdrawals, refusals, expiries and GPC signals,
    the state table equals both a replay of the ledger and an independent model."""
    for sid in SUBJECTS:
        vault.put(CRM, "customers", {"full_name": "P"}, purpose="account_management",
                  subject_id=sid, jurisdiction=JURISDICTIONS[sid])
    expected: dict[ConsentKey, ConsentStatus] = {}

    @settings(max_examples=20, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(ops=OPS)
    def run(ops: list[tuple[str, str, str, ConsentScope]]) -> None:
        for sid, op, purpose, scope in ops:
            if op == "gpc":
                vault.consent.apply_gpc(sid, source="gateway", tenant="acme")
                for gpc_purpose in ("sale", "sharing"):
                    expected[ConsentKey("acme", sid, gpc_purpose, ConsentScope.GENERAL)] = (
                        ConsentStatus.WITHDRAWN)
                continue
            notice = NOTICES.get((purpose, scope))
            if op == "grant":
                if notice is None:
                    continue
                vault.consent.grant(sid, purpose, tenant="acme", notice_id=notice,
                                    notice_version=1, scope=scope)
            else:
                getattr(vault.consent, op)(sid, purpose, tenant="acme", scope=scope)
            expected[ConsentKey("acme", sid, purpose, scope)] = STATUS[op]
        states = _all_states(vault)
        history = _all_history(vault)
        assert states == dict(replay(history))
        assert {k: s.status for k, s in states.items()} == expected
        seqs = [e.seq for e in history]
        assert len(seqs) == len(set(seqs))

    run()
