"""Value types of the public API."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, NewType, TypeVar

from vault.errors import InvalidData, InvalidTenant

__all__ = [
    "Registry",
    "SYSTEM_ACTOR",
    "Actor",
    "Record",
    "RecordId",
    "SecondFactor",
    "SubjectId",
    "TenantId",
    "actor_id",
    "check_identifier",
    "check_jurisdiction",
    "check_tenant",
]

TenantId = NewType("TenantId", str)
SubjectId = NewType("SubjectId", str)
RecordId = NewType("RecordId", str)

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_REGION = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
# As vault.jurisdiction.Code: a regime's area (EU, EEA) or a country, with a subdivision.
_JURISDICTION = re.compile(r"[A-Z]{2,3}(-[A-Z0-9]{1,3})?")
# A factor's method: ``totp``, an RFC 8176 ``amr`` value (otp, hwk...), ``jwt:otp``.
_METHOD = re.compile(r"[a-z][a-z0-9_:-]{0,31}")

#: The actor id under which the local operator (a caller with no ``Actor``, who
#: holds the key file) is audited.
SYSTEM_ACTOR = "system"


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is a well-formed identifier, else raise InvalidData.

    Identifiers (actor ids, record ids, subject ids) are not personal data by
    contract; they are still never echoed when malformed.
    """
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise InvalidData(f"{what} is not a valid identifier", field=what)
    return value


def actor_id(actor: Actor | None) -> str:
    """The id an action is attributed to: the actor's, or the local operator's."""
    return actor.id if actor is not None else SYSTEM_ACTOR


def check_tenant(value: object) -> str:
    """Return ``value`` if it is a well-formed tenant id, else raise InvalidTenant."""
    if not isinstance(value, str) or not _TENANT.fullmatch(value):
        raise InvalidTenant("tenant is not a valid identifier", field="tenant")
    return value


def check_jurisdiction(value: object) -> str:
    """Return ``value`` if it looks like a jurisdiction code (``EU``, ``US-CA``,
    ``CN``), else raise InvalidData."""
    if not isinstance(value, str) or not _JURISDICTION.fullmatch(value):
        raise InvalidData("jurisdiction must look like EU, US-CA or CN", field="jurisdiction")
    return value


@dataclass(frozen=True, slots=True)
class SecondFactor:
    """A second factor the actor proved: how, and when.

    Args:
        method: ``totp``, or an RFC 8176 ``amr`` value (``otp``, ``hwk``, ``mfa``...),
            optionally after the source (the gateway says ``jwt:otp``).
        at: when it was proved (timezone-aware).

    Misuse: Vault cannot check the proof itself; whoever builds an ``Actor`` with
    a ``SecondFactor`` vouches that the factor was verified (the gateway after a
    step-up token, the CLI after an operator's TOTP code).
    """

    method: str
    at: dt.datetime

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _METHOD.fullmatch(self.method):
            raise InvalidData("a second factor's method must be a short code such as totp",
                              field="second_factor")
        if not isinstance(self.at, dt.datetime) or self.at.utcoffset() is None:
            raise InvalidData("a second factor's time must be timezone-aware",
                              field="second_factor")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking: a user or service id, within a tenant.

    Args:
        id: the actor's id (a user name or service account, not personal data
            of a customer).
        tenant: the tenant (domain) the actor works in.
        region: where the actor processes the data it reads or writes (ISO
            3166-1 country code, or a region code such as ``US-CA``). When it
            lies outside a subject's area, the access is a cross-border
            transfer and the subject's jurisdiction profile decides (transfer
            mechanism, separate consent, localisation). None means "where the
            data is": no transfer.
        recipient: the id of another handler (a third party, not a processor
            acting for you) that this actor provides the data to, or None.
            Under PIPL Art. 23 that needs the subject's separate consent.
        second_factor: the second factor the actor proved (step-up), or None.
            The settings (``VaultSettings.step_up``) say which actions need one:
            by default reading ``sensitive`` fields, exports, erasure, and key,
            role and policy administration. The audit entries of its calls
            record the factor and its time.

    Misuse: ``region``, ``recipient`` and ``second_factor`` are declared by the
    caller; a gateway must set them from its own knowledge of the client
    (service account, deployment region, a verified step-up), never from a
    request header the client controls.
    """

    id: str
    tenant: str = "default"
    region: str | None = None
    recipient: str | None = None
    second_factor: SecondFactor | None = None

    def __post_init__(self) -> None:
        check_identifier(self.id, "actor")
        check_tenant(self.tenant)
        if self.region is not None and (
            not isinstance(self.region, str) or not _REGION.fullmatch(self.region)
        ):
            raise InvalidData("region must look like DE, US or US-CA", field="region")
        if self.recipient is not None:
            check_identifier(self.recipient, "recipient")
        if self.second_factor is not None and not isinstance(self.second_factor, SecondFactor):
            raise InvalidData("second_factor must be a vault.SecondFactor",
                              field="second_factor")


@dataclass(frozen=True, slots=True, repr=False)
class Record:
    """A record as one actor may see it.

    Attributes:
        id: the record id.
        subject_id: the data subject the record belongs to.
        collection: the collection name.
        data: the permitted values; fields the actor may only see masked hold
            the masked form. Withheld fields are absent, never empty strings.
        masked: names of fields in ``data`` that are masked.
        withheld: names of fields present in the record but not permitted.
        step_up: names of ``sensitive`` fields the actor may read but that were
            left out because it has not proved a second factor (whether the record
            holds them or not); read them again with a stepped-up actor.
        version: the record's version, 1 when written and one more at each update
            (an HTTP ``ETag``; ``update``/``delete`` take it as ``if_version``).
    """

    id: str
    subject_id: str
    collection: str
    data: Mapping[str, Any]
    masked: frozenset[str] = field(default_factory=frozenset)
    withheld: frozenset[str] = field(default_factory=frozenset)
    version: int = 1
    step_up: frozenset[str] = field(default_factory=frozenset)

    def __repr__(self) -> str:
        # Values are personal data: a repr ends up in logs and tracebacks.
        return (
            f"Record(id={self.id!r}, subject_id={self.subject_id!r}, "
            f"collection={self.collection!r}, fields={sorted(self.data)!r}, "
            f"masked={sorted(self.masked)!r}, withheld={sorted(self.withheld)!r}"
            + (f", step_up={sorted(self.step_up)!r})" if self.step_up else ")")
        )


_T = TypeVar("_T")


class Registry(Generic[_T]):
    """A read-only set of named definitions (collections, purposes): membership by
    name, iteration over the definitions in the order given, and a length."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, _T]) -> None:
        self._items: Mapping[str, _T] = MappingProxyType(dict(items))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[_T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
