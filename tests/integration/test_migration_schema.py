"""Every released revision still makes the schema it made when it was released.

The migrations build their recurring columns with the helpers of
:mod:`vault.store.ddl` (``tenant()``, ``timestamp()``, ``serial()``, ...), so an
edit to one helper would silently change what old revisions create, and vaults
made or upgraded through them would differ from each other. Here the schema
after upgrading to each revision, step by step, is described canonically (the
catalog: tables, columns, keys, constraints, indexes, sequences, triggers and
their functions) and its SHA-256 compared with the one recorded when the
revision was released. A new revision adds its line to ``RELEASED``; a changed
digest means a released revision was edited, which must not happen: add a new
revision (or a new helper) instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from vault.store import migrate
from vault.store.engine import make_engine

from ..conftest import fresh_pg_schemas

# revision: (SQLite, PostgreSQL) SHA-256 of the canonical schema after upgrading to it.
RELEASED: dict[str, tuple[str, str]] = {
    "0001": ("243fb9038e991cc3b536e143b834d5670e560d77719aa769db9c55811bdd7f60",
             "6469dff8a3677f5f4de9466822f11c48700297374b958922c0e33d8d49c8f8a3"),
    "0002": ("fc67a8ed8a8c7a9cbf319eca4b8df74a735e06005b085ccb394a1e65709ca19b",
             "b89d1a98e9842072f2c9ade1e70b3f69e73cba480f828d33693ba5aa7df6d3d5"),
    "0003": ("f00cd87e09f1b3f2f4c7fcc9ea8f355991c3d2e7b811c5b7732838df2bbf21a6",
             "76de6516e8b195128615cbc034695a8e8330c0c27f6c55161e8a2e457edb9de4"),
    "0004": ("cd67039e004227e2293d2d187424d5e9ab63d73da83e04c41f53f465368e79e3",
             "2ed2b091e08d0edbe512a616acd27b9cc431075b24496df4862d354fa3ce55bb"),
    "0005": ("ab15608f300149fc473a9571ed3427122008b0a864c76cb8cd1539cbf30c4741",
             "790956082d911eb076bd7676ee3c453ea1d9886cdd0171d7c9078019e0213673"),
    "0006": ("14c3d03fea51a2741691f37ba4b8756c61ef21ad6771f2f91c041c0fcbb47d85",
             "ba64d9eda1b590d68f6ebf2d68a995d651a4b4cc833dc1348ec60067d021ca7c"),
    "0007": ("234b89ed6bf92fdd294df449faab46d553eea9003990ac8f81d8c55ef15d26e1",
             "64ad20cb7ed31b47fc232726bc5e4f944165e492a7c82de84350afdedab278ab"),
    "0008": ("a94c2a6cbc8a7cfec1220c15b2a4cecdef1d18d45d8e9a878e0d06b4b9f29799",
             "a87f5a40214867ddc3ce05d82677a7a00e461ba5585b6e38d5c45eb360aec830"),
    "0009": ("5337f056eb26febeae2ead3b16f1c388f925f141de7694ea6c467b16c4a9bf8d",
             "d6f7c8801569d658f06a47880981f421ff05a52230073b820279c6dd119fe276"),
    "0010": ("baa1229c1b18fa936d7aff8c76b95df1dc6700bd0751452b3194e70dd744566e",
             "46d4e2ca802f1affe11fe3c3dfbd24c5eebf56db344c4434f6f50a57e80efa07"),
    "0011": ("b2c52a5f51f4092727fe61a406d37520aa453b366c850f3faf011ba43401f9ff",
             "dcaec2078e0c63d5b09263510bacf3adb295933572919ce91559c6137d510169"),
    "0012": ("4fa4daabe13e9fb594be407234490b35065bc65879031b70dee77ff26a2da100",
             "86c5cea1ff2b92c7a47931217316b2c42594831099bc2f46280dc3776ef38046"),
}

_PG_CATALOG = {
    "column": """
        SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length,
               is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = current_schema()
        ORDER BY table_name, ordinal_position""",
    "constraint": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
        ORDER BY 1, 2""",
    "index": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = current_schema() ORDER BY 1, 2""",
    "sequence": """
        SELECT sequence_name, data_type FROM information_schema.sequences
        WHERE sequence_schema = current_schema() ORDER BY 1""",
    "trigger": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace
        ORDER BY 1, 2""",
    "function": """
        SELECT proname, pg_get_functiondef(oid) FROM pg_proc
        WHERE pronamespace = current_schema()::regnamespace ORDER BY 1""",
}


def canonical_schema(conn: Connection) -> str:
    """The schema ``conn`` sees, one line per catalog row, in a fixed order; on
    PostgreSQL with the (per-test) schema's name replaced by ``<schema>``."""
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"))
        return "".join(f"{tuple(row)!r}\n" for row in rows)
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    lines = [f"{kind} {tuple(row)!r}\n"
             for kind, query in _PG_CATALOG.items() for row in conn.execute(text(query))]
    return "".join(lines).replace(f'"{schema}".', "<schema>.").replace(f"{schema}.", "<schema>.")


def schema_digests(engine: Engine) -> Iterator[tuple[str, str, str]]:
    """(revision, SHA-256, canonical schema) after upgrading ``engine``'s empty database
    to each released revision in turn."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    for revision in RELEASED:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        with engine.connect() as conn:
            described = canonical_schema(conn)
        yield revision, hashlib.sha256(described.encode()).hexdigest(), described


def _check(engine: Engine, column: int, tmp_path: Path) -> None:
    changed = []
    for revision, digest, described in schema_digests(engine):
        if digest != RELEASED[revision][column]:
            (tmp_path / f"{revision}.schema").write_text(described)
            changed.append(revision)
    assert not changed, (f"released revisions {changed} now make another schema "
                         f"({engine.dialect.name}; described in {tmp_path})")


def test_each_released_revision_makes_its_released_schema_on_sqlite(tmp_path: Path) -> None:
    """Upgrading an empty SQLite database through 0001..head gives, after each revision,
    exactly the schema that revision gave when it was released."""
    engine = make_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        _check(engine, 0, tmp_path)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_each_released_revision_makes_its_released_schema_on_postgres(tmp_path: Path) -> None:
    """The same on PostgreSQL, in a fresh schema (triggers, functions and how each
    trigger is enabled included)."""
    with fresh_pg_schemas() as schemas:
        engine = make_engine(schemas.url(schemas.names[0]))
        try:
            _check(engine, 1, tmp_path)
        finally:
            engine.dispose()


def _model_drift(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate finds between the schema the migrations make (to
    head) and the models the code reads and writes through (``Base.metadata``),
    for the tables the models declare (other tables are declared elsewhere)."""
    import vault.dsar.tables
    import vault.policy.tables
    import vault.retention.tables
    import vault.store.models  # noqa: F401
    from vault.store.base import Base

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    declared = set(Base.metadata.tables)

    def ours(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
        table = obj if kind == "table" else getattr(obj, "table", None)
        return kind != "table" or name in declared if table is None else (
            table.name in declared)

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": ours})
        return [d for d in compare_metadata(context, Base.metadata)
                # indexes and constraints: the migrations name them, the models
                # leave some to the naming convention; only columns and types here.
                if _kind(d) in {"add_column", "remove_column", "modify_type",
                                "modify_nullable", "add_table", "remove_table"}]


def _kind(diff: Any) -> str:
    first = diff[0] if isinstance(diff, list) else diff
    return str(first[0])


def test_the_models_match_the_migrated_schema_on_sqlite(tmp_path: Path) -> None:
    """Every column the models declare exists, with the same type and nullability,
    in the schema the migrations make (and no migrated column is missing from the
    models), so the code never writes through a model the database disagrees with."""
    engine = make_engine(f"sqlite:///{tmp_path / 'models.db'}")
    try:
        assert _model_drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_models_match_the_migrated_schema_on_postgres() -> None:
    """The same on PostgreSQL (INTEGER and BIGINT are told apart here)."""
    with fresh_pg_schemas() as schemas:
        engine = make_engine(schemas.url(schemas.names[0]))
        try:
            assert _model_drift(engine) == []
        finally:
            engine.dispose()
