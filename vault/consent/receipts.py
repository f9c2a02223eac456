"""Signed consent receipts (Kantara Consent Receipt v1.1 / ISO/IEC TS 27560 fields).

Every consent event gets a receipt when it is recorded: a JSON body with the
fields of the Kantara Consent Receipt specification (v1.1) that apply, and
the ISO/IEC TS 27560 consent-record notions it adds (notice hash, event type,
validity), signed with the vault's Ed25519 key::

    {"receipt": {...}, "alg": "Ed25519", "keyId": "<fingerprint>", "signature": "<base64>"}

The key is the one that signs audit checkpoints (one public key to publish,
``vault keys export-public-key``). The signature covers a domain-separation
prefix and the canonical JSON of the body, so a receipt signature can never
pass for a checkpoint signature or the other way round.

The body holds ids and codes only (the subject's id, purposes, data
categories, notice id/version/hash): no personal data.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.audit.checkpoint import canonical, key_fingerprint
from vault.consent.model import ConsentEvent, ConsentScope, EventKind
from vault.consent.notices import Notice
from vault.errors import InvalidReceipt

__all__ = ["RECEIPT_FORMAT", "build_receipt", "sign_receipt", "verify_receipt"]

RECEIPT_FORMAT = "vault.consent-receipt.v1"
_CONTEXT = b"vault.consent-receipt.v1\n"


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def build_receipt(event: ConsentEvent, *, vault_id: str, notice: Notice | None,
                  public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The receipt body of ``event`` (not yet signed)."""
    categories = list(notice.categories) if notice is not None else []
    sensitive = event.scope is ConsentScope.SENSITIVE
    return {
        "format": RECEIPT_FORMAT,
        # Kantara Consent Receipt v1.1 fields
        "version": "KI-CR-v1.1.0",
        "jurisdiction": event.jurisdiction or event.regime,
        "consentTimestamp": int(event.occurred_at.timestamp()),
        "collectionMethod": event.method.value,
        "consentReceiptID": event.event_id,
        "publicKey": key_fingerprint(public_key),
        "language": notice.language if notice is not None else None,
        "piiPrincipalId": event.subject_id,
        "piiControllers": [{"piiController": event.tenant}],
        "policyUrl": None,
        "services": [{
            "service": event.tenant,
            "purposes": [{
                "purpose": event.purpose,
                "purposeCategory": [event.purpose],
                "consentType": "EXPLICIT" if event.kind is EventKind.GRANT else "WITHDRAWAL"
                if event.kind is EventKind.WITHDRAW else event.kind.value.upper(),
                "piiCategory": categories,
                "primaryPurpose": True,
                "termination": _iso(event.expires_at) or "until withdrawn",
                "thirdPartyDisclosure": event.scope is ConsentScope.PROVIDE_TO_THIRD_PARTY,
            }],
        }],
        "sensitive": sensitive,
        "spiCat": categories if sensitive else [],
        # ISO/IEC TS 27560 consent-record notions
        "record": {
            "regime": event.regime,
            "eventType": event.kind.value,
            "scope": event.scope.value,
            "eventTime": _iso(event.occurred_at),
            "validUntil": _iso(event.expires_at),
            "notice": None if event.notice_id is None else {
                "id": event.notice_id, "version": event.notice_version,
                "sha256": event.notice_hash},
            "source": event.source,
            "evidence": event.evidence,
            "conflict": event.conflict,
            "recordedBy": event.actor,
            "vault": vault_id,
        },
    }


def sign_receipt(body: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """The base64 Ed25519 signature of a receipt body."""
    return base64.b64encode(key.sign(_CONTEXT + canonical(body))).decode("ascii")


def verify_receipt(receipt: Mapping[str, Any], public_key: Ed25519PublicKey) -> Mapping[str, Any]:
    """Check a signed receipt; return its body.

    Raises:
        InvalidReceipt: malformed, altered, or signed by another key (one
            opaque error, whatever the cause).
    """
    try:
        body = receipt["receipt"]
        signature = base64.b64decode(receipt["signature"], validate=True)
        if (not isinstance(body, Mapping) or body.get("format") != RECEIPT_FORMAT
                or receipt.get("alg") != "Ed25519"):
            raise InvalidReceipt()
        public_key.verify(signature, _CONTEXT + canonical(body))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        raise InvalidReceipt() from None
    return body
