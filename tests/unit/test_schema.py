"""Collection schemas: the shipped customers schema, and broken schema files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from vault.crypto.masking import MaskStyle
from vault.errors import ConfigError, UnknownCollection, UnknownField
from vault.schema import (
    Classification,
    CollectionSchema,
    FieldSpec,
    FieldType,
    SchemaRegistry,
    load_schemas,
)

from ..helpers import CUSTOMER_FIELDS

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CUSTOMERS_TOML = POLICIES / "collections" / "customers.toml"


def _policies_with(
    tmp_path: Path, old: str = "", new: str = "", *, name: str = "customers"
) -> Path:
    """Copy customers.toml into tmp_path/policies/collections/<name>.toml with one edit."""
    text = CUSTOMERS_TOML.read_text(encoding="utf-8")
    if old:
        assert old in text, f"test setup: {old!r} not found in customers.toml"
        text = text.replace(old, new, 1)
    folder = tmp_path / "policies"
    (folder / "collections").mkdir(parents=True)
    (folder / "collections" / f"{name}.toml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def customers() -> CollectionSchema:
    """The shipped customers schema."""
    return load_schemas(POLICIES).get("customers")


def test_shipped_customers_loads_fields_in_declaration_order(customers: CollectionSchema) -> None:
    """The shipped customers.toml loads with its 11 fields in declaration order."""
    assert customers.name == "customers"
    assert customers.field_names == CUSTOMER_FIELDS
    assert tuple(customers.fields) == CUSTOMER_FIELDS


def test_national_id_is_sensitive_and_searchable(customers: CollectionSchema) -> None:
    """national_id is a sensitive, searchable field masked to its last four."""
    spec = customers.field("national_id")
    assert spec.classification is Classification.SENSITIVE
    assert spec.searchable
    assert spec.mask is MaskStyle.LAST4
    assert spec.type is FieldType.NATIONAL_ID


def test_searchable_and_required_fields(customers: CollectionSchema) -> None:
    """searchable_fields and required_fields list names in declaration order."""
    assert customers.searchable_fields == ("email", "phone", "national_id")
    assert customers.required_fields == ("full_name",)


def test_field_specs_of_customers(customers: CollectionSchema) -> None:
    """Field settings are read from the file, with per-type defaults filled in."""
    email = customers.field("email")
    assert (email.type, email.mask, email.max_length) == (FieldType.EMAIL, MaskStyle.EMAIL, 254)
    assert customers.field("full_name").max_length == 200
    assert customers.field("full_name").mask is MaskStyle.INITIALS
    assert customers.field("phone").max_length == 32
    assert customers.field("postal_address").max_length == 500
    assert customers.field("support_notes").max_length == 10_000
    assert customers.field("birth_date").max_length is None
    assert customers.field("birth_date").mask is MaskStyle.YEAR
    assert customers.field("device_info").max_bytes == 16_384
    assert customers.field("device_info").max_length is None
    country = customers.field("country")
    assert (country.max_length, country.transform, country.mask) == (2, "upper", MaskStyle.NONE)
    assert country.compiled_pattern is not None
    assert country.compiled_pattern.fullmatch("FR")
    segment = customers.field("marketing_segment")
    assert segment.values is not None
    assert "vip" in segment.values
    assert segment.value_set == frozenset(segment.values)


def test_unknown_field_is_named_when_it_looks_like_a_name(customers: CollectionSchema) -> None:
    """field() raises UnknownField naming the collection and a well-formed field name."""
    with pytest.raises(UnknownField, match="customers") as info:
        customers.field("favourite_colour")
    assert "favourite_colour" in str(info.value)
    assert info.value.field == "favourite_colour"


def test_unknown_field_never_echoes_a_malformed_name(customers: CollectionSchema) -> None:
    """field() describes a malformed name instead of echoing it."""
    with pytest.raises(UnknownField) as info:
        customers.field("li.wei@example.cn")
    assert "li.wei" not in str(info.value)
    assert "an invalid field name" in str(info.value)
    assert info.value.field is None


def test_registry_lookup_and_iteration() -> None:
    """The registry finds, lists, contains and iterates over collections."""
    registry = load_schemas(POLICIES)
    assert "customers" in registry
    assert "nope" not in registry
    assert 42 not in registry
    assert "customers" in registry.names
    assert all(isinstance(schema, CollectionSchema) for schema in registry)
    assert len(registry) == len(registry.names)


def test_registry_unknown_collection_is_refused_without_echo() -> None:
    """get() raises UnknownCollection, echoing only well-formed names."""
    registry = load_schemas(POLICIES)
    with pytest.raises(UnknownCollection, match="'suppliers'"):
        registry.get("suppliers")
    with pytest.raises(UnknownCollection) as info:
        registry.get("Li Wei <li.wei@example.cn>")
    assert "li.wei" not in str(info.value)


def test_registry_refuses_duplicate_names(customers: CollectionSchema) -> None:
    """Two schemas with the same name cannot share a registry."""
    with pytest.raises(ConfigError, match="twice"):
        SchemaRegistry([customers, customers])


def test_schemas_are_frozen(customers: CollectionSchema) -> None:
    """Schemas cannot be changed after loading."""
    with pytest.raises(ValidationError):
        customers.field("email").searchable = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        customers.fields["extra"] = customers.field("email")  # type: ignore[index]


def test_schema_dumps_without_warnings(customers: CollectionSchema) -> None:
    """A schema round-trips through model_dump (read-only mapping serialises cleanly)."""
    again = CollectionSchema.model_validate(customers.model_dump())
    assert again == customers
    assert again.field_names == CUSTOMER_FIELDS


def test_schema_can_be_built_in_code() -> None:
    """A schema built from Python objects fills field names from the keys."""
    schema = CollectionSchema(
        name="notes",
        fields={
            "body": {"type": "text", "classification": "personal", "category": "support"},
        },
    )
    assert schema.field("body").name == "body"
    assert schema.field("body").mask is MaskStyle.FULL
    spec = FieldSpec(
        name="code",
        type=FieldType.STRING,
        classification=Classification.PUBLIC,
        category="technical",
    )
    assert spec.max_length == 200


BROKEN_FILES = [
    pytest.param(
        '[fields.email]\ntype = "email"',
        '[fields.email]\ntype = "zzcanary"',
        "fields.email.type",
        id="unknown-field-type",
    ),
    pytest.param(
        'values = ["prospect", "new", "regular", "vip", "churn_risk", "dormant"]\n',
        "",
        "fields.marketing_segment.values",
        id="enum-without-values",
    ),
    pytest.param(
        'pattern = "^[A-Z]{2}$"',
        'pattern = "^[A-Z]{2}$"\nvalues = ["FR", "zzcanary"]',
        "fields.country.values",
        id="values-on-non-enum",
    ),
    pytest.param(
        'mask = "email"',
        'mask = "email"\ncolour = "zzcanary"',
        "fields.email.colour",
        id="unknown-key-extra-forbid",
    ),
    pytest.param(
        "[fields.full_name]",
        "[fields.Full-Name]",
        "fields.Full-Name",
        id="bad-field-name",
    ),
    pytest.param(
        'mask = "year"',
        'mask = "year"\nmax_length = 10',
        "fields.birth_date.max_length",
        id="max-length-on-date",
    ),
    pytest.param(
        'category = "technical"',
        'category = "technical"\nsearchable = true',
        "fields.device_info.searchable",
        id="searchable-json",
    ),
    pytest.param(
        'pattern = "^[A-Z]{2}$"',
        'pattern = "^[A-Z{2}(zzcanary"',
        "fields.country.pattern",
        id="pattern-not-a-regex",
    ),
    pytest.param(
        'mask = "email"',
        'mask = "zzcanary"',
        "fields.email.mask",
        id="unknown-mask",
    ),
    pytest.param(
        'category = "contact"',
        'category = "Contact Details zzcanary"',
        "fields.email.category",
        id="bad-category",
    ),
    pytest.param(
        'mask = "year"',
        'mask = "year"\ntransform = "upper"',
        "fields.birth_date",
        id="transform-on-date",
    ),
    pytest.param(
        "description = ",
        'colour = "zzcanary"\ndescription = ',
        "colour",
        id="unknown-top-level-key",
    ),
]


@pytest.mark.parametrize(("old", "new", "path"), BROKEN_FILES)
def test_broken_schema_file_names_file_and_path(
    tmp_path: Path, old: str, new: str, path: str
) -> None:
    """A broken schema raises ConfigError naming the file and field path, not the values."""
    folder = _policies_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_schemas(folder)
    message = str(info.value)
    assert "customers.toml" in message
    assert f"{path}" in message
    assert "zzcanary" not in message


def test_bad_toml_syntax_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error raises ConfigError naming the file and the position."""
    folder = _policies_with(tmp_path, "[fields.phone]", "[fields.phone\nzzcanary")
    with pytest.raises(ConfigError, match=r"customers\.toml: invalid TOML") as info:
        load_schemas(folder)
    assert "line" in str(info.value)
    assert "zzcanary" not in str(info.value)


def test_empty_collections_folder_is_refused(tmp_path: Path) -> None:
    """A policies folder whose collections/ holds no schema raises ConfigError."""
    (tmp_path / "collections").mkdir()
    with pytest.raises(ConfigError, match="no collection schema files"):
        load_schemas(tmp_path)


def test_missing_collections_folder_is_refused(tmp_path: Path) -> None:
    """A policies folder without collections/ raises ConfigError."""
    with pytest.raises(ConfigError, match="no collections folder"):
        load_schemas(tmp_path)


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    """A schema file whose stem is not a valid collection name raises ConfigError."""
    folder = _policies_with(tmp_path, name="Customers-2024")
    with pytest.raises(ConfigError, match=r"Customers-2024\.toml: the file name"):
        load_schemas(folder)


def test_name_key_must_match_file_name(tmp_path: Path) -> None:
    """A top-level name that differs from the file stem raises ConfigError."""
    folder = _policies_with(tmp_path, "description = ", 'name = "clients"\ndescription = ')
    with pytest.raises(ConfigError, match=r"customers\.toml: name"):
        load_schemas(folder)


def test_collection_without_fields_is_refused(tmp_path: Path) -> None:
    """A collection must declare at least one field."""
    folder = tmp_path / "policies"
    (folder / "collections").mkdir(parents=True)
    (folder / "collections" / "empty.toml").write_text('description = "nothing"\n')
    with pytest.raises(ConfigError, match=r"empty\.toml: fields"):
        load_schemas(folder)


def test_copy_of_shipped_folder_loads(tmp_path: Path) -> None:
    """A copy of the shipped collections folder loads the same schemas."""
    shutil.copytree(POLICIES / "collections", tmp_path / "collections")
    assert load_schemas(tmp_path).names == load_schemas(POLICIES).names
