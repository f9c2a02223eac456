"""Every expected failure of Vault is a :class:`VaultError`.

The tree::

    VaultError
    ├── ConfigError            a settings value, policy file or schema file is wrong
    ├── InvalidData            input refused before anything was written
    │   ├── UnknownCollection
    │   ├── UnknownField       data minimisation: the schema does not declare it
    │   ├── UnknownPurpose     the purpose registry does not know it
    │   ├── UnknownRole
    │   ├── InvalidTenant
    │   └── RightNotGranted  the subject's regime grants no such request
    ├── InvalidTransition      a data-subject request cannot make this move
    ├── ApprovalRequired       a change waits for a second administrator
    ├── AccessDenied           the policy refused (default deny)
    │   ├── StepUpRequired     the action needs a verified second factor (step-up)
    │   ├── ConsentRequired    the purpose needs a consent the subject has not given
    │   ├── SubjectRestricted  processing restricted (GDPR Art. 18, PIPL Art. 44)
    │   └── TransferRefused    cross-border: no mechanism, or the data must stay local
    ├── NotFound               no such record, subject or key version
    ├── VersionConflict        the record is not at the version the caller expected
    ├── CryptoError
    │   ├── DecryptionError    any failure to open an envelope; never says why
    │   ├── KeyDestroyed       the subject's data key was crypto-shredded
    │   ├── InvalidReceipt     a consent receipt's signature or content does not verify
    │   └── InvalidExport      a DSAR export bundle or certificate does not verify
    ├── KeyManagementError     rotation/retirement refused, key file unsafe, a wrapped
    │   │                      key that fails its integrity check (or its binding)
    │   ├── KeyProviderUnavailable  the HSM or KMS cannot be used (token gone, wrong
    │   │                      PIN, endpoint down, access refused): fail closed
    │   └── ShreddingIncomplete  key destroyed, but its old bytes may remain in the WAL
    ├── AuditError             the audit entry could not be written; nothing returned
    ├── PolicyError            the policy engine failed (treated as deny)
    └── LegalHoldActive        a legal hold forbids deleting or shredding this data

Messages carry ids and field names, never values, keys or ciphertext: an error
can end up in a log, an HTTP body or a traceback shown to somebody who must
not see the customer's data.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ApprovalRequired",
    "AuditError",
    "ConfigError",
    "ConsentRequired",
    "CryptoError",
    "DecryptionError",
    "InvalidData",
    "InvalidExport",
    "InvalidReceipt",
    "InvalidTenant",
    "InvalidTransition",
    "KeyDestroyed",
    "KeyManagementError",
    "KeyProviderUnavailable",
    "LegalHoldActive",
    "REFUSAL_HINTS",
    "NotFound",
    "PolicyError",
    "RightNotGranted",
    "ShreddingIncomplete",
    "StepUpRequired",
    "SubjectRestricted",
    "TransferRefused",
    "UnknownCollection",
    "UnknownField",
    "UnknownPurpose",
    "UnknownRole",
    "VaultError",
    "VersionConflict",
]


class VaultError(Exception):
    """Base class of every error Vault raises on purpose.

    Attributes:
        code: a stable, machine-readable identifier (used by the gateway).
    """

    code: str = "vault_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(VaultError):
    """Settings, a policy file or a collection schema is invalid."""

    code = "config_error"


class InvalidData(VaultError):
    """Input was refused before anything was written.

    Attributes:
        field: the offending field name, when there is one. Never its value.
    """

    code = "invalid_data"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownCollection(InvalidData):
    """The collection is not declared in the schema."""

    code = "unknown_collection"


class UnknownField(InvalidData):
    """The field is not declared for the collection (data minimisation)."""

    code = "unknown_field"


class UnknownPurpose(InvalidData):
    """The purpose is not in the purpose registry."""

    code = "unknown_purpose"


class UnknownRole(InvalidData):
    """The role is not defined by the policy."""

    code = "unknown_role"


class InvalidTenant(InvalidData):
    """The tenant identifier is malformed."""

    code = "invalid_tenant"


class RightNotGranted(InvalidData):
    """The subject's regime grants no request of this kind (and its profile does
    not accept it as a courtesy)."""

    code = "right_not_granted"


class InvalidTransition(VaultError):
    """A data-subject request was asked to make a move its lifecycle forbids
    (complete before processing, extend twice, extend after the first period...).

    Attributes:
        request_id: the request.
        state: the state it is in.
    """

    code = "invalid_transition"

    def __init__(self, message: str, *, request_id: str, state: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.state = state


class ApprovalRequired(VaultError):
    """A change that needs a second administrator was recorded as pending.

    Attributes:
        change_id: the pending change, for ``v.policy.approve`` by another administrator.
    """

    code = "approval_required"

    def __init__(self, message: str, *, change_id: str) -> None:
        super().__init__(message)
        self.change_id = change_id


#: The reason codes of a refusal (``AccessDenied.reason``, the audit entry's reason,
#: the gateway's problem ``reason``) with the hint each one gives. They describe the
#: caller's own rights or the subject's state as the caller asked for it, never
#: whether a record or subject exists.
REFUSAL_HINTS: dict[str, str] = {
    "no_role": "the actor holds no role in this tenant: an administrator assigns one "
               "(vault roles assign USER ROLE --tenant TENANT)",
    "other_tenant": "the actor's roles are in another tenant: act in your own tenant, or "
                    "ask for a role in this one",
    "purpose_not_allowed": "no role of the actor allows this action on this collection for "
                           "this purpose: use a purpose the role allows (vault policy "
                           "report) or ask for a role that allows it",
    "field_not_allowed": "the actor's roles do not allow this action on these fields for "
                         "this purpose: ask only for the fields the role allows",
    "consent_required": "the purpose needs the subject's consent: record it first "
                        "(vault consent grant) or use a purpose with another lawful basis",
    "reconsent_required": "the consent no longer covers this use: ask the subject again",
    "opted_out": "the subject opted out of this purpose",
    "separate_consent_required": "sensitive data or this scope needs a separate consent",
    "restricted": "the subject's processing is restricted (GDPR Art. 18): only storage, "
                  "legal claims and request fulfilment may run",
    "legal_hold": "a legal hold applies: nothing is deleted until it is lifted "
                  "(vault retention holds list)",
    "transfer_refused": "the data would leave the subject's area without a transfer "
                        "mechanism: record one in the jurisdiction profile",
    "localisation_required": "the subject's profile requires the data to stay in the country",
    "search_miss_limit": "too many searches matched nothing: wait for the window to pass",
    "self_grant": "no one grants themselves a data action: another administrator does it",
    "step_up_required": "this action needs a fresh second factor (TOTP)",
}


class AccessDenied(VaultError):
    """The policy refused the request (default deny).

    Attributes:
        reason: a stable sub-code of the refusal when there is one (one of
            :data:`REFUSAL_HINTS`: ``no_role``, ``purpose_not_allowed``,
            ``field_not_allowed``, ``consent_required``, ``search_miss_limit``...),
            recorded in the audit entry; None otherwise.
        hint: how the caller can fix it (the reason's default unless given); it
            names the caller's rights, never whether a record or subject exists.
    """

    code = "access_denied"

    def __init__(self, message: str, *, reason: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self._hint = hint

    @property
    def hint(self) -> str | None:
        # "opted_out:general": the code is the part before the first colon.
        return self._hint or (REFUSAL_HINTS.get(self.reason.split(":")[0])
                              if self.reason else None)


class StepUpRequired(AccessDenied):
    """The action needs a verified second factor and the actor has proved none
    (or proved it too long ago): see ``VaultSettings.step_up`` and
    ``Actor.second_factor``. Audited as a denial with reason ``step_up_required``.

    Attributes:
        action: the kind of action that needs it (``read_sensitive``, ``export``,
            ``erase``, ``keys``, ``roles``, ``policy``).
    """

    code = "step_up_required"

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message, reason="step_up_required")
        self.action = action


class _ConsentRefusal(AccessDenied):
    """Base of the refusals of the consent layer.

    Attributes:
        reason: a stable sub-code (``consent_required``, ``reconsent_required``,
            ``opted_out``, ``separate_consent_required``...).
        purpose: the purpose refused.
        scope: the consent scope missing (``general``, ``sensitive``...), if any.
        subjects: how many subjects were refused.
    """

    def __init__(self, message: str, *, reason: str, purpose: str | None = None,
                 scope: str | None = None, subjects: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.purpose = purpose
        self.scope = scope
        self.subjects = subjects


class ConsentRequired(_ConsentRefusal):
    """The purpose rests on consent in the subject's regime and there is no
    current consent covering this use (never given, withdrawn, opted out,
    expired, given to a notice that does not cover it, or a separate consent
    is missing)."""

    code = "consent_required"


class SubjectRestricted(_ConsentRefusal):
    """The subject's processing is restricted; only storage, legal claims and
    request fulfilment purposes may run (GDPR Art. 18(2), PIPL Art. 44/47)."""

    code = "subject_restricted"


class TransferRefused(_ConsentRefusal):
    """The data would leave the subject's area without a transfer mechanism in
    place, or the profile requires it to stay in the country."""

    code = "transfer_refused"


class NotFound(VaultError):
    """No such record, subject or key version."""

    code = "not_found"


class VersionConflict(VaultError):
    """``update``/``delete`` with ``if_version``: the record has another version
    (someone changed it since the caller read it); nothing was changed."""

    code = "version_conflict"


class CryptoError(VaultError):
    """Base of cryptographic failures."""

    code = "crypto_error"


class DecryptionError(CryptoError):
    """An envelope could not be opened.

    Deliberately opaque: it never says whether the tag, the header, the key or
    the associated data was wrong, so that it cannot serve as an oracle.
    """

    code = "decryption_error"

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class KeyDestroyed(CryptoError):
    """The data subject's key was destroyed (crypto-shredded): data is gone."""

    code = "key_destroyed"


class InvalidReceipt(CryptoError):
    """A consent receipt does not verify (altered, forged, or another key)."""

    code = "invalid_receipt"

    def __init__(self, message: str = "the consent receipt does not verify") -> None:
        super().__init__(message)


class InvalidExport(CryptoError):
    """A data-subject export bundle (or an erasure certificate) does not verify: a
    file was changed, added or removed, or the signature is wrong.

    Attributes:
        problems: what differs, e.g. ``changed:records.json`` (file names only).
    """

    code = "invalid_export"

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class KeyManagementError(VaultError):
    """A key operation was refused (unsafe key file, retiring a key in use...)."""

    code = "key_management_error"


class KeyProviderUnavailable(KeyManagementError):
    """The key provider (a PKCS#11 token, AWS KMS) cannot be used now: the token is
    missing or refused the PIN, the endpoint does not answer, access is refused.
    Nothing that needs a new wrap or unwrap proceeds (fail closed); data keys
    already unwrapped and cached keep serving until their TTL."""

    code = "key_provider_unavailable"


class ShreddingIncomplete(KeyManagementError):
    """A data key is destroyed in the key store, but SQLite could not checkpoint the
    WAL (another connection held a read snapshot), so the old wrapped key may remain
    in ``keys.db-wal`` until the next successful checkpoint."""

    code = "shredding_incomplete"


class AuditError(VaultError):
    """The audit entry could not be written, so the operation did not happen.

    Attributes:
        retryable: the write lost a race (deadlock, serialisation failure, a
            busy SQLite database, or the audit chain's uniqueness backstop) and
            a fresh transaction may succeed; :mod:`vault.store.retry` retries it.
    """

    code = "audit_error"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class PolicyError(VaultError):
    """The policy engine failed; Vault treats this as a denial."""

    code = "policy_error"


class LegalHoldActive(VaultError):
    """A legal hold applies to the subject or tenant: its data must not be deleted.

    Raised by deletions, crypto-shredding and erasure while a hold is active;
    the retention sweeper skips held data instead. The message names hold ids,
    never the hold's reason.

    Attributes:
        hold_ids: ids of the active holds that apply.
    """

    code = "legal_hold_active"
    #: The refusal's reason code in the audit log and the ``denials`` report.
    reason = "legal_hold"

    def __init__(self, message: str, *, hold_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.hold_ids = hold_ids

    @property
    def hint(self) -> str:
        return REFUSAL_HINTS["legal_hold"]
