"""The notice registry: which text a consent was given against, and what it covers.

Notices are data, in ``policies/notices.toml`` (see its header). A consent
covers a use only if the notice version it was given against lists the
purpose, the scope and every data category the use touches; so a new
version that adds a purpose or a category needs a new consent for the new
use (PIPL Art. 14), while consents to the old version keep covering what the
old version named.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vault._toml import load_model
from vault.consent.model import ConsentScope
from vault.errors import ConfigError, InvalidData
from vault.policy.purposes import PurposeRegistry

__all__ = ["Notice", "NoticeRegistry", "load_notices"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Notice(BaseModel):
    """One version of a notice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name
    version: int = Field(ge=1)
    published: dt.date
    purposes: tuple[Name, ...] = Field(min_length=1)
    categories: tuple[Name | Annotated[str, StringConstraints(pattern=r"^\*$")], ...] = Field(
        min_length=1)
    scopes: tuple[ConsentScope, ...] = (ConsentScope.GENERAL,)
    language: Annotated[str, StringConstraints(max_length=35)] = "en"
    text: str | None = None
    text_sha256: Hex64

    def covers(self, purpose: str, scope: ConsentScope, categories: Iterable[str]) -> bool:
        """Whether a consent to this version covers ``purpose`` in ``scope`` for
        data of ``categories``."""
        if purpose not in self.purposes or scope not in self.scopes:
            return False
        if "*" in self.categories:
            return True
        return set(categories) <= set(self.categories)


class _Version(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    published: dt.date
    purposes: tuple[Name, ...] = Field(min_length=1)
    categories: tuple[str, ...] = Field(min_length=1)
    scopes: tuple[ConsentScope, ...] = (ConsentScope.GENERAL,)
    language: str = "en"
    text: str | None = None
    text_sha256: Hex64 | None = None


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    notices: dict[Name, list[_Version]] = Field(default_factory=dict)


def text_hash(text: str) -> str:
    """SHA-256 (hex) of a notice text as UTF-8: what the ledger records."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class NoticeRegistry:
    """Every notice version, by (id, version). Immutable."""

    __slots__ = ("_notices",)

    def __init__(self, notices: Iterable[Notice]) -> None:
        by_key: dict[tuple[str, int], Notice] = {}
        for notice in notices:
            key = (notice.id, notice.version)
            if key in by_key:
                raise ConfigError(f"notice {notice.id!r} version {notice.version} is "
                                  "defined twice")
            by_key[key] = notice
        self._notices: Mapping[tuple[str, int], Notice] = by_key

    def get(self, notice_id: str, version: int) -> Notice:
        """The notice version.

        Raises:
            InvalidData: no such notice version.
        """
        if not isinstance(notice_id, str) or isinstance(version, bool) or not isinstance(
                version, int):
            raise InvalidData("a notice is a string id and an integer version",
                              field="notice")
        notice = self._notices.get((notice_id, version))
        if notice is None:
            raise InvalidData("unknown notice id or version", field="notice")
        return notice

    def find(self, notice_id: str | None, version: int | None) -> Notice | None:
        if notice_id is None or version is None:
            return None
        return self._notices.get((notice_id, version))

    def latest(self, notice_id: str) -> Notice:
        versions = [n for (i, _), n in self._notices.items() if i == notice_id]
        if not versions:
            raise InvalidData("unknown notice id", field="notice")
        return max(versions, key=lambda n: n.version)

    def versions(self) -> list[Notice]:
        """Every notice version, by id then version."""
        return sorted(self._notices.values(), key=lambda n: (n.id, n.version))

    def __len__(self) -> int:
        return len(self._notices)


def load_notices(path: Path, purposes: PurposeRegistry | None = None) -> NoticeRegistry:
    """Read and validate the notices file.

    Raises:
        ConfigError: unreadable, invalid, a hash that disagrees with the text,
            a version without hash or text, or a purpose that is not registered.
    """
    parsed = load_model(path, _File, what="the notices file", kind="notices")
    notices = []
    for notice_id, versions in parsed.notices.items():
        for entry in versions:
            where = f"{path}: notices.{notice_id} version {entry.version}"
            digest = entry.text_sha256
            if entry.text is not None:
                computed = text_hash(entry.text)
                if digest is not None and digest != computed:
                    raise ConfigError(f"{where}: text_sha256 does not match the text")
                digest = computed
            if digest is None:
                raise ConfigError(f"{where}: needs text or text_sha256")
            if purposes is not None:
                for purpose in entry.purposes:
                    if purpose not in purposes:
                        raise ConfigError(f"{where}: purpose {purpose!r} is not registered")
            try:
                notices.append(Notice(
                    id=notice_id, version=entry.version, published=entry.published,
                    purposes=entry.purposes, categories=entry.categories, scopes=entry.scopes,
                    language=entry.language, text=entry.text, text_sha256=digest))
            except ValidationError as exc:
                raise ConfigError(f"{where}: invalid ({exc.error_count()} problems)") from None
    return NoticeRegistry(notices)
