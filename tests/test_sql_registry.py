"""The registry of named SQL: malformed files fail at load time, not at call time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from catbird_db._paths import SQL_DIR
from catbird_db.errors import SqlRegistryError
from catbird_db.sql import Registry, load_registry, registry, statement
from catbird_db.tools import sql as tools_sql
from catbird_db.tools.grants import runtime_statements


def folder(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.sql").write_text(textwrap.dedent(text))
    return tmp_path


def test_a_statement_is_its_body_under_a_comment_naming_it(tmp_path: Path) -> None:
    statements = load_registry(
        folder(
            tmp_path,
            things="""\
            -- name: get_thing
            -- One thing,
            -- by id.
            SELECT id
            FROM things
            WHERE id = %(thing_id)s;
            """,
        )
    )
    stmt = statements["get_thing"]
    assert (
        stmt.text
        == "/* catbird_db:things.get_thing */\nSELECT id\nFROM things\nWHERE id = %(thing_id)s;"
    )
    assert stmt.qualified_name == "things.get_thing"
    assert stmt.entity == "things"
    assert stmt.doc == "One thing, by id."
    assert stmt.line == 1
    assert stmt.path == tmp_path / "things.sql"


def test_parameters_are_the_named_placeholders_each_once(tmp_path: Path) -> None:
    statements = load_registry(
        folder(
            tmp_path,
            things="""\
            -- name: between
            SELECT 1 WHERE %(low)s < %(high)s AND %(low)s >= 0 AND 'a%%' LIKE 'a%%';
            """,
        )
    )
    assert statements["between"].params == frozenset({"low", "high"})


def test_statements_of_several_files_share_one_registry(tmp_path: Path) -> None:
    statements = load_registry(
        folder(
            tmp_path,
            a="-- name: one\nSELECT 1;\n",
            b="-- name: two\nSELECT 2;\n\n-- name: three\nSELECT 3;\n",
        )
    )
    assert sorted(statements) == ["one", "three", "two"]
    assert statements["three"].line == 4


def test_a_name_used_twice_fails_naming_both_places(tmp_path: Path) -> None:
    path = folder(tmp_path, a="-- name: one\nSELECT 1;\n", b="\n-- name: one\nSELECT 2;\n")
    with pytest.raises(
        SqlRegistryError, match=r"b\.sql:2: duplicate name 'one' \(first in a\.sql:1\)"
    ):
        load_registry(path)


def test_an_empty_body_fails(tmp_path: Path) -> None:
    path = folder(tmp_path, a="-- name: one\n-- Only a doc line.\n\n-- name: two\nSELECT 2;\n")
    with pytest.raises(SqlRegistryError, match=r"a\.sql:1: statement 'one' has an empty body"):
        load_registry(path)


def test_a_body_of_only_comments_fails(tmp_path: Path) -> None:
    path = folder(tmp_path, a="-- name: one\n-- Doc.\n\n-- SELECT 1;\n")
    with pytest.raises(SqlRegistryError, match="empty body"):
        load_registry(path)


def test_sql_outside_a_named_block_fails(tmp_path: Path) -> None:
    path = folder(tmp_path, a="-- A file comment is fine.\n\nSELECT 0;\n-- name: one\nSELECT 1;\n")
    with pytest.raises(SqlRegistryError, match=r"a\.sql:3: SQL outside a named block"):
        load_registry(path)


@pytest.mark.parametrize("name", ["GetThing", "get-thing", "1thing", "get.thing"])
def test_a_name_that_is_not_snake_case_fails(tmp_path: Path, name: str) -> None:
    path = folder(tmp_path, a=f"-- name: {name}\nSELECT 1;\n")
    with pytest.raises(SqlRegistryError, match="is not snake_case"):
        load_registry(path)


def test_a_folder_without_statements_fails(tmp_path: Path) -> None:
    with pytest.raises(SqlRegistryError, match="no named statements"):
        load_registry(tmp_path)


def test_the_shipped_registry_knows_every_statement_and_refuses_unknown_names() -> None:
    assert statement("get_conversation") is registry()["get_conversation"]
    with pytest.raises(SqlRegistryError, match="no named statement 'get_conversaton'"):
        statement("get_conversaton")


def test_identifier_slots_are_filled_with_quoted_identifiers(tmp_path: Path) -> None:
    statements = load_registry(
        folder(
            tmp_path,
            grants="""\
            -- name: grant_it
            -- A grant to a role no parameter can name.
            GRANT USAGE ON SCHEMA {schema_name} TO {grantee};
            """,
        )
    )
    stmt = statements["grant_it"]
    assert stmt.identifiers == {"schema_name", "grantee"}
    assert stmt.params == frozenset()
    composed = stmt.compose(grantee='app"; DROP TABLE x; --', schema_name="Public")
    assert composed.as_string(None).endswith(
        'GRANT USAGE ON SCHEMA "Public" TO "app""; DROP TABLE x; --";'
    )
    with pytest.raises(ValueError, match="expected identifiers"):
        stmt.compose(grantee="app")
    with pytest.raises(ValueError, match="expected identifiers"):
        stmt.compose(grantee="app", schema_name="public", table="t")


def test_the_runtime_statements_hold_no_identifier_slots() -> None:
    assert [s.name for s in runtime_statements() if s.identifiers] == []


def test_the_tools_statements_are_a_registry_apart_from_the_runtime_one() -> None:
    runtime, tools = registry(), tools_sql.registry()
    assert {s.path.parent for s in runtime.values()} == {SQL_DIR}
    assert {s.path.parent for s in tools.values()} == {SQL_DIR / "tools"}
    assert {"describe_types", "copy_messages", "grant_members"} <= set(tools)
    assert set(runtime).isdisjoint({"describe_types", "copy_messages", "grant_members"})
    assert tools_sql.statement("describe_types") is tools["describe_types"]
    with pytest.raises(SqlRegistryError, match="no named statement 'describe_types'"):
        statement("describe_types")
    with pytest.raises(SqlRegistryError, match="no named statement 'get_conversation'"):
        tools_sql.statement("get_conversation")


def test_a_name_may_be_used_once_in_each_registry(tmp_path: Path) -> None:
    runtime = folder(tmp_path, a="-- name: one\nSELECT 1;\n")
    (tmp_path / "tools").mkdir()
    tools = folder(tmp_path / "tools", b="-- name: one\nSELECT 2;\n")
    assert "SELECT 1" in Registry(runtime).statement("one").text
    assert "SELECT 2" in Registry(tools).statement("one").text
