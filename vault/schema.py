"""Collection schemas: which fields a collection may hold, and how each is treated.

Collections are declared as data, one TOML file per collection in
``policies/collections/`` (the file stem is the collection name)::

    description = "People we sell to"

    [fields.email]
    type = "email"
    classification = "personal"
    category = "contact"
    searchable = true
    mask = "email"

The files are validated with pydantic (frozen models, unknown keys refused). A
broken file raises :class:`~vault.errors.ConfigError` naming the file and the
path of the bad setting, never the values found in it.

The schema is the data-minimisation boundary: a field that is not declared
cannot be written (see :mod:`vault.validation`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from vault.crypto.masking import MaskStyle
from vault.errors import ConfigError, UnknownCollection, UnknownField
from vault.types import Registry

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_LENGTH",
    "NAME_PATTERN",
    "Classification",
    "CollectionSchema",
    "FieldSpec",
    "FieldType",
    "SchemaRegistry",
    "describe_name",
    "load_schemas",
]

#: What a collection, field or data-category name must look like.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

# How many pydantic errors one ConfigError lists before summarising the rest.
_MAX_REPORTED_ERRORS = 5


def _private(model: BaseModel) -> dict[str, Any]:
    """A model's private attributes, read directly: pydantic's ``__getattr__``
    route costs microseconds, and validation reads them for every value."""
    return model.__pydantic_private__ or {}


class FieldType(StrEnum):
    """The kind of value a field holds; decides validation and normalisation."""

    STRING = "string"
    EMAIL = "email"
    PHONE = "phone"
    DATE = "date"
    NATIONAL_ID = "national_id"
    POSTAL_ADDRESS = "postal_address"
    TEXT = "text"
    ENUM = "enum"
    JSON = "json"


class Classification(StrEnum):
    """How harmful disclosure of a field would be.

    ``SENSITIVE`` is for the special categories of GDPR Art. 9 and the
    sensitive personal information of PIPL Art. 28 (national ids, health,
    biometrics...): they need separate consent in some jurisdictions.
    """

    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


#: Default ``max_length`` (characters) per type; absent types take no max_length.
DEFAULT_MAX_LENGTH: Mapping[FieldType, int] = MappingProxyType(
    {
        FieldType.STRING: 200,
        FieldType.EMAIL: 254,
        FieldType.PHONE: 32,
        FieldType.NATIONAL_ID: 32,
        FieldType.POSTAL_ADDRESS: 500,
        FieldType.TEXT: 10_000,
    }
)
#: Default ``max_bytes`` of a JSON field (its compact UTF-8 encoding).
DEFAULT_MAX_BYTES = 16_384

# Types whose values are free text that `pattern` and `transform` can constrain.
_PATTERN_TYPES = frozenset({FieldType.STRING, FieldType.TEXT})


def _type_the_setting_applies_to(
    info: ValidationInfo, value: object, applies: Callable[[FieldType], bool], refusal: str
) -> FieldType | None:
    """The field's type, for a validator of a type-specific setting (``value``).

    None when the type is unknown (its own validation failed) or when the setting
    does not apply to it and is unset; the validator then returns ``value`` as is.

    Raises:
        ValueError: the setting is given for a type it does not apply to
            (``refusal``, with ``{kind}`` filled in).
    """
    kind: FieldType | None = info.data.get("type")
    if kind is None:
        return None
    if not applies(kind):
        if value is not None:
            raise ValueError(refusal.format(kind=kind))
        return None
    return kind


def describe_name(name: object, *, what: str = "field") -> str:
    """Return a printable description of a user-supplied name, never echoing junk.

    A name that looks like a declared identifier is quoted; anything else (which
    may be arbitrary user input, even PII) is described as "an invalid ... name".
    """
    if isinstance(name, str) and _NAME_RE.match(name):
        return repr(name)
    return f"an invalid {what} name"


class FieldSpec(BaseModel):
    """One declared field of a collection.

    Attributes:
        name: field name (filled from the TOML table key).
        type: kind of value; decides validation and normalisation.
        classification: sensitivity of the data.
        category: data category (``contact``, ``identity``...), used by consent
            and retention rules.
        searchable: whether a blind index is kept for equality search.
        verifiable: whether a verification-only digest is kept, so a data-subject
            request can be verified against it (full name, birth date, postal
            address) without decrypting anything; ``find`` never queries it.
        mask: how the value is shown to an actor allowed to see it only masked.
        required: whether a record must carry a non-empty value.
        max_length: maximum characters after normalisation (text-like types;
            defaults per type, see :data:`DEFAULT_MAX_LENGTH`).
        max_bytes: maximum size of the compact JSON encoding (``json`` only).
        values: the allowed values (``enum`` only, and required there).
        pattern: a regular expression the normalised value must match in full
            (``string`` and ``text`` only).
        transform: case change applied before ``pattern`` is checked.
        description: free text for humans.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    type: FieldType
    classification: Classification
    category: Name
    searchable: bool = False
    verifiable: bool = False
    mask: MaskStyle = MaskStyle.FULL
    required: bool = False
    max_length: int | None = Field(default=None, ge=1, validate_default=True)
    max_bytes: int | None = Field(default=None, ge=1, validate_default=True)
    values: tuple[str, ...] | None = Field(default=None, validate_default=True)
    pattern: str | None = None
    transform: Literal["none", "upper", "lower"] = "none"
    description: str = ""

    _compiled_pattern: re.Pattern[str] | None = PrivateAttr(default=None)
    _value_set: frozenset[str] = PrivateAttr(default=frozenset())

    # Each check below runs after `type` has been validated (fields validate in
    # declaration order); if `type` itself was bad, it is already reported.

    @field_validator("searchable", "verifiable")
    @classmethod
    def _searchable_type(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("type") is FieldType.JSON:
            raise ValueError("json fields cannot be searchable or verifiable")
        return value

    @field_validator("max_length")
    @classmethod
    def _max_length_for_type(cls, value: int | None, info: ValidationInfo) -> int | None:
        kind = _type_the_setting_applies_to(
            info, value, DEFAULT_MAX_LENGTH.__contains__,
            "max_length does not apply to {kind} fields")
        if kind is None:
            return value
        return DEFAULT_MAX_LENGTH[kind] if value is None else value

    @field_validator("max_bytes")
    @classmethod
    def _max_bytes_for_type(cls, value: int | None, info: ValidationInfo) -> int | None:
        kind = _type_the_setting_applies_to(
            info, value, lambda kind: kind is FieldType.JSON,
            "max_bytes applies only to json fields, not {kind}")
        if kind is None:
            return value
        return DEFAULT_MAX_BYTES if value is None else value

    @field_validator("values")
    @classmethod
    def _values_for_enum(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        kind = _type_the_setting_applies_to(
            info, value, lambda kind: kind is FieldType.ENUM,
            "values applies only to enum fields, not {kind}")
        if kind is None:
            return value
        if not value:
            raise ValueError("enum fields need a non-empty list of values")
        if len(set(value)) != len(value):
            raise ValueError("enum values must be unique")
        for item in value:
            if not item or item != item.strip():
                raise ValueError("enum values must be non-empty and without surrounding spaces")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        kind = info.data.get("type")
        if kind is not None and kind not in _PATTERN_TYPES:
            raise ValueError(f"pattern applies only to string and text fields, not {kind}")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc.msg})") from None
        return value

    @model_validator(mode="after")
    def _transform_for_type(self) -> FieldSpec:
        if self.transform != "none" and self.type not in _PATTERN_TYPES:
            raise ValueError(f"transform applies only to string and text fields, not {self.type}")
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Built once here so that validating 10,000 records compiles nothing.
        if self.pattern is not None:
            self._compiled_pattern = re.compile(self.pattern)
        if self.values is not None:
            self._value_set = frozenset(self.values)

    @property
    def compiled_pattern(self) -> re.Pattern[str] | None:
        """The compiled ``pattern``, or None when the field has none."""
        return _private(self)["_compiled_pattern"]  # type: ignore[no-any-return]

    @property
    def value_set(self) -> frozenset[str]:
        """The allowed values of an enum field as a set (empty for other types)."""
        return _private(self)["_value_set"]  # type: ignore[no-any-return]


class CollectionSchema(BaseModel):
    """The declared fields of one collection, in declaration order.

    Attributes:
        name: collection name (the TOML file stem).
        description: free text for humans.
        fields: field name -> :class:`FieldSpec`, read-only, in declaration order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    description: str = ""
    fields: Mapping[Name, FieldSpec] = Field(min_length=1)

    _field_names: tuple[str, ...] = PrivateAttr(default=())
    _searchable: tuple[str, ...] = PrivateAttr(default=())
    _verifiable: tuple[str, ...] = PrivateAttr(default=())
    _required: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _name_fields_from_keys(cls, data: Any) -> Any:
        # In TOML the field name is the table key: `[fields.email]`.
        if isinstance(data, Mapping) and isinstance(data.get("fields"), Mapping):
            named = {
                key: ({"name": key, **table} if isinstance(table, Mapping) else table)
                for key, table in data["fields"].items()
            }
            data = {**data, "fields": named}
        return data

    @field_validator("fields")
    @classmethod
    def _read_only(cls, value: Mapping[str, FieldSpec]) -> Mapping[str, FieldSpec]:
        for key, spec in value.items():
            if spec.name != key:
                raise ValueError(f"field {key!r} has a different name {spec.name!r}")
        return MappingProxyType(dict(value))

    @field_serializer("fields")
    def _dump_fields(self, value: Mapping[str, FieldSpec]) -> dict[str, FieldSpec]:
        return dict(value)

    def model_post_init(self, context: Any, /) -> None:
        specs = tuple(self.fields.values())
        self._field_names = tuple(spec.name for spec in specs)
        self._searchable = tuple(spec.name for spec in specs if spec.searchable)
        self._verifiable = tuple(spec.name for spec in specs
                                 if spec.verifiable and not spec.searchable)
        self._required = tuple(spec.name for spec in specs if spec.required)

    def field(self, name: str) -> FieldSpec:
        """Return the spec of field ``name``.

        Raises:
            UnknownField: the collection does not declare it. The message names
                the field only if it looks like a field name.
        """
        try:
            return self.fields[name]
        except (KeyError, TypeError):
            raise UnknownField(
                f"collection {self.name!r} has no field {describe_name(name)}",
                field=name if isinstance(name, str) and _NAME_RE.match(name) else None,
            ) from None

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of all fields, in declaration order."""
        return _private(self)["_field_names"]  # type: ignore[no-any-return]

    @property
    def searchable_fields(self) -> tuple[str, ...]:
        """Names of the fields with a blind index, in declaration order."""
        return _private(self)["_searchable"]  # type: ignore[no-any-return]

    @property
    def verifiable_fields(self) -> tuple[str, ...]:
        """Names of the non-searchable fields with a verification-only digest."""
        return _private(self)["_verifiable"]  # type: ignore[no-any-return]

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Names of the fields every record must carry, in declaration order."""
        return _private(self)["_required"]  # type: ignore[no-any-return]


class SchemaRegistry(Registry[CollectionSchema]):
    """The collections known to a vault, by name.

    Iterating yields the :class:`CollectionSchema` objects sorted by name;
    ``in`` tests a collection name.
    """

    __slots__ = ()

    def __init__(self, schemas: Iterable[CollectionSchema]) -> None:
        """Build a registry.

        Raises:
            ConfigError: two schemas share a name.
        """
        by_name: dict[str, CollectionSchema] = {}
        for schema in schemas:
            if schema.name in by_name:
                raise ConfigError(f"collection {schema.name!r} is declared twice")
            by_name[schema.name] = schema
        super().__init__(dict(sorted(by_name.items())))

    def get(self, name: str) -> CollectionSchema:
        """Return the schema of collection ``name``.

        Raises:
            UnknownCollection: no such collection. The message names it only if
                it looks like a collection name.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownCollection(
                f"unknown collection {describe_name(name, what='collection')}"
            ) from None

    @property
    def names(self) -> tuple[str, ...]:
        """Collection names, sorted."""
        return tuple(self._items)

    def __repr__(self) -> str:
        return f"SchemaRegistry(names={list(self._items)!r})"


def load_schemas(folder: Path) -> SchemaRegistry:
    """Load every ``folder/collections/*.toml`` into a registry.

    Args:
        folder: the policies folder (the one holding ``collections/``).

    Returns:
        The registry of all collections found.

    Raises:
        ConfigError: the folder holds no collection file, or a file cannot be
            read or is invalid. The message names the file and the path of the
            bad setting, never the values in it.
    """
    directory = Path(folder) / "collections"
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no collections folder")
    files = sorted(p for p in directory.glob("*.toml") if p.is_file())
    if not files:
        raise ConfigError(f"{directory}: no collection schema files (*.toml)")
    return SchemaRegistry(_load_file(path) for path in files)


def _load_file(path: Path) -> CollectionSchema:
    name = path.stem
    if not _NAME_RE.match(name):
        raise ConfigError(f"{path}: the file name is not a valid collection name {NAME_PATTERN}")
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, not the content.
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if "name" in document and document["name"] != name:
        raise ConfigError(f"{path}: name: must be the file name {name!r} or left out")
    try:
        return CollectionSchema.model_validate({**document, "name": name})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Summarise pydantic errors by location and message, without input values."""
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
        for err in errors[:_MAX_REPORTED_ERRORS]
    ]
    if len(errors) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)
