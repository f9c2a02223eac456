"""Consent: the append-only ledger, derived states, receipts, GPC and the decision.

Reached from an open vault as ``v.consent`` (:class:`ConsentService`). The
pure parts (events and states, :func:`replay`, the notice registry, the
per-subject :func:`decide`, receipts) import no database code.
"""

from vault.consent.decision import Refusal, SubjectFacts, Use, Verdict, decide
from vault.consent.model import (
    ConsentEvent,
    ConsentKey,
    ConsentMethod,
    ConsentScope,
    ConsentState,
    ConsentStatus,
    EventKind,
    apply,
    replay,
)
from vault.consent.notices import Notice, NoticeRegistry, load_notices, text_hash
from vault.consent.receipts import RECEIPT_FORMAT, verify_receipt

__all__ = [
    "RECEIPT_FORMAT",
    "ConsentEvent",
    "ConsentKey",
    "ConsentMethod",
    "ConsentScope",
    "ConsentState",
    "ConsentStatus",
    "EventKind",
    "Notice",
    "NoticeRegistry",
    "Refusal",
    "SubjectFacts",
    "Use",
    "Verdict",
    "apply",
    "decide",
    "load_notices",
    "replay",
    "text_hash",
    "verify_receipt",
]
