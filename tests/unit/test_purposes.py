"""The purpose registry and its TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vault.errors import ConfigError, UnknownPurpose
from vault.policy.purposes import Purpose, PurposeRegistry, load_purposes

from ..helpers import PURPOSE_NAMES

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "purposes.toml"

SHIPPED_NAMES = set(PURPOSE_NAMES)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "purposes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_declares_the_documented_purposes() -> None:
    """The shipped purposes.toml loads and declares exactly the documented purposes."""
    registry = load_purposes(SHIPPED)
    assert registry.names == SHIPPED_NAMES
    assert len(registry) == len(SHIPPED_NAMES)


def test_every_shipped_purpose_has_a_description() -> None:
    """Each shipped purpose carries a non-empty description."""
    registry = load_purposes(SHIPPED)
    for purpose in registry:
        assert purpose.description.strip(), purpose.name


def test_get_returns_the_purpose() -> None:
    """get() returns the Purpose with its name and description."""
    registry = load_purposes(SHIPPED)
    purpose = registry.get("marketing")
    assert purpose.name == "marketing"
    assert "ampaign" in purpose.description


def test_get_unknown_raises_unknown_purpose_naming_it() -> None:
    """An unregistered purpose raises UnknownPurpose naming the purpose id."""
    registry = load_purposes(SHIPPED)
    with pytest.raises(UnknownPurpose, match="world_domination") as info:
        registry.get("world_domination")
    assert info.value.field == "purpose"


def test_get_does_not_echo_a_value_that_is_not_an_id() -> None:
    """A non-id string passed as purpose (say an e-mail) is not echoed in the error."""
    registry = load_purposes(SHIPPED)
    with pytest.raises(UnknownPurpose) as info:
        registry.get("ana@example.com")
    assert "ana@example.com" not in str(info.value)


def test_contains() -> None:
    """`in` is true for registered purposes only, and false for non-strings."""
    registry = load_purposes(SHIPPED)
    assert "analytics" in registry
    assert "nope" not in registry
    assert 42 not in registry


def test_purpose_is_frozen() -> None:
    """A Purpose cannot be changed after creation."""
    purpose = Purpose(name="analytics", description="Statistics.")
    with pytest.raises(ValidationError):
        purpose.description = "changed"  # type: ignore[misc]


def test_registry_refuses_duplicate_names() -> None:
    """Building a registry with one name twice is a ConfigError."""
    one = Purpose(name="analytics", description="a")
    with pytest.raises(ConfigError, match="analytics"):
        PurposeRegistry([one, one])


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming the file."""
    path = _write(tmp_path, "[purposes.marketing\ndescription = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_purposes(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_missing_description_names_file_and_field(tmp_path: Path) -> None:
    """A purpose without description raises ConfigError naming the file, purpose and key."""
    path = _write(tmp_path, "[purposes.marketing]\ndescription = 'ok'\n\n[purposes.analytics]\n")
    with pytest.raises(ConfigError) as info:
        load_purposes(path)
    message = str(info.value)
    assert str(path) in message
    assert "purposes.analytics.description" in message


def test_empty_description_is_refused(tmp_path: Path) -> None:
    """A blank description is as bad as a missing one."""
    path = _write(tmp_path, "[purposes.marketing]\ndescription = '   '\n")
    with pytest.raises(ConfigError, match=r"purposes\.marketing\.description"):
        load_purposes(path)


def test_unknown_key_is_refused_without_echoing_its_value(tmp_path: Path) -> None:
    """An unexpected key is named, its value is not."""
    path = _write(
        tmp_path,
        "[purposes.marketing]\ndescription = 'ok'\nlawful_basiss = 'secret-canary-value'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_purposes(path)
    assert "purposes.marketing.lawful_basiss" in str(info.value)
    assert "secret-canary-value" not in str(info.value)


def test_malformed_purpose_name_is_refused(tmp_path: Path) -> None:
    """A purpose id that is not lower snake case is refused."""
    path = _write(tmp_path, '[purposes."Bad Name"]\ndescription = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_purposes(path)
    assert str(path) in str(info.value)


def test_no_purposes_is_refused(tmp_path: Path) -> None:
    """A file without any [purposes.*] table is a ConfigError."""
    path = _write(tmp_path, "# nothing here\n")
    with pytest.raises(ConfigError, match="purposes"):
        load_purposes(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """A missing file raises ConfigError naming it."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_purposes(path)
