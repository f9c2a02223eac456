"""Request and response bodies of the gateway (typed, closed: unknown keys refused)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiKeyOut", "BatchCreate", "BatchCreated", "BatchGet", "BatchItem", "CheckpointOut",
    "ConsentEventOut", "ConsentEventPage", "ConsentGrant", "ConsentStateOut", "ConsentWithdraw",
    "CreateRecord", "Created", "Health", "JurisdictionIn", "KeyStatusOut", "Page", "PatchRecord",
    "PolicyCheckIn", "PolicyCheckOut", "ReceiptOut", "RecordOut", "RecordPage", "RestrictionIn",
    "RoleAssignmentIn", "RoleAssignmentOut", "RoleAssignmentPage", "RoleChangeOut", "RotationOut",
    "SearchRecords", "StepUpIn", "StepUpOut", "SubjectOut", "VerifyOut",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


def dataclass_fields(source: type, /, **replaced: Any) -> dict[str, Any]:
    """The fields of the dataclass ``source`` with their types, in its order, for
    the ``__annotations__`` of an answer that mirrors it (every field required);
    ``replaced`` gives some fields another type (a nested answer, a code's string)."""
    hints = get_type_hints(source)
    return {f.name: replaced.get(f.name, hints[f.name]) for f in dataclasses.fields(source)}


def attributes(value: Any) -> dict[str, Any]:
    """A dataclass instance's fields by name (shallow: nested values as they are)."""
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


class CreateRecord(_Closed):
    """A new record: field values, its subject (None: a new one) and jurisdiction."""

    data: dict[str, Any]
    subject_id: str | None = Field(default=None, pattern=_ID)
    jurisdiction: str | None = Field(default=None, max_length=16)


class Created(_Closed):
    id: str
    subject_id: str


class BatchItem(_Closed):
    data: dict[str, Any]
    subject_id: str | None = Field(default=None, pattern=_ID)


class BatchCreate(_Closed):
    """Records stored in one transaction: all or none."""

    items: list[BatchItem] = Field(min_length=1)
    jurisdiction: str | None = Field(default=None, max_length=16)


class BatchCreated(_Closed):
    items: list[Created]


class BatchGet(_Closed):
    ids: list[str] = Field(min_length=1)
    fields: list[str] | None = None


class PatchRecord(_Closed):
    """Fields to change; null removes an optional field."""

    data: dict[str, Any] = Field(min_length=1)


class SearchRecords(_Closed):
    """Equality search on searchable fields (values in the body, never the URL)."""

    criteria: dict[str, str] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = Field(default=None, max_length=64)


class RecordOut(_Closed):
    """A record as the caller may see it (the library's ``Record``).

    ``step_up_fields``: sensitive fields left out because the caller has not
    proved a second factor (``POST /v1/auth/step-up``).
    """

    id: str
    subject_id: str
    collection: str
    data: dict[str, Any]
    masked: list[str]
    withheld: list[str]
    version: int
    step_up_fields: list[str] = []


class Page(_Closed):
    next_cursor: str | None = None


class RecordPage(Page):
    items: list[RecordOut]


class ConsentGrant(_Closed):
    purpose: str = Field(max_length=64)
    notice_id: str = Field(max_length=128)
    notice_version: int = Field(ge=1, le=2**31 - 1)
    notice_hash: str | None = Field(default=None, max_length=64)
    scope: str = Field(default="general", max_length=64)
    method: str = Field(default="api", max_length=32)
    source: str = Field(default="gateway", max_length=128)
    evidence: str | None = Field(default=None, max_length=128)
    expires_at: dt.datetime | None = None


class ConsentWithdraw(_Closed):
    purpose: str = Field(max_length=64)
    scope: str = Field(default="general", max_length=64)
    method: str = Field(default="api", max_length=32)
    source: str = Field(default="gateway", max_length=128)
    evidence: str | None = Field(default=None, max_length=128)


class ConsentEventOut(_Closed):
    event_id: str
    subject_id: str
    purpose: str
    scope: str
    kind: str
    regime: str
    method: str
    notice_id: str | None
    notice_version: int | None
    occurred_at: dt.datetime
    expires_at: dt.datetime | None
    source: str
    conflict: str | None


class ConsentEventPage(Page):
    items: list[ConsentEventOut]


class ConsentStateOut(_Closed):
    purpose: str
    scope: str
    status: str
    regime: str
    notice_id: str | None
    notice_version: int | None
    expires_at: dt.datetime | None
    event_id: str
    updated_at: dt.datetime


class ReceiptOut(BaseModel):
    """A consent receipt as issued: its body, the Ed25519 signature and the key id."""

    model_config = ConfigDict(populate_by_name=True)

    receipt: dict[str, Any]
    alg: str
    key_id: str = Field(alias="keyId")
    signature: str


class SubjectOut(_Closed):
    subject_id: str
    jurisdiction: str | None
    regime: str
    restricted: bool
    restricted_at: dt.datetime | None
    restriction_reason: str | None


class JurisdictionIn(_Closed):
    jurisdiction: str | None = Field(max_length=16)


class RestrictionIn(_Closed):
    reason: str = Field(default="subject_request", max_length=64)


class VerifyOut(_Closed):
    ok: bool
    entries: int
    chains: int
    reason: str | None
    first_bad_seq: int | None
    findings: int


class CheckpointOut(_Closed):
    name: str


class RoleAssignmentIn(_Closed):
    user: str = Field(pattern=_ID)
    role: str = Field(max_length=64)


class RoleAssignmentOut(_Closed):
    user: str
    role: str
    tenant: str


class RoleAssignmentPage(Page):
    items: list[RoleAssignmentOut]


class RoleChangeOut(_Closed):
    changed: bool


class PolicyCheckIn(_Closed):
    actor: str = Field(pattern=_ID)
    object: str = Field(max_length=192)
    action: str = Field(max_length=64)
    purpose: str = Field(max_length=64)


class PolicyCheckOut(_Closed):
    allowed: bool


class KeyStatusOut(_Closed):
    current_version: int
    versions: list[int]
    data_keys_by_version: dict[str, int]


class RotationOut(_Closed):
    new_version: int
    rewrapped: int


class ApiKeyOut(_Closed):
    id: str
    name: str
    kind: str
    actor: str
    tenant: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked: bool
    totp: bool


class StepUpIn(_Closed):
    """``method: totp`` with the ``code`` of a person API key's authenticator, or
    ``method: jwt``: the bearer JWT's ``amr`` names a second factor and its
    ``auth_time`` is recent."""

    method: Literal["jwt", "totp"] = "jwt"
    code: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class StepUpOut(_Closed):
    step_up_token: str
    expires_at: dt.datetime
    factor: str


class Health(_Closed):
    status: str
    checks: dict[str, str] = {}
