"""`catbird-db check`: the shipped statements pass; one broken statement is reported."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from catbird_db._paths import SQL_DIR
from catbird_db.tools import cli
from catbird_db.tools.check import check, outer_joined
from catbird_db.tools.usage import Problem

_ROOT = Path(__file__).resolve().parent.parent


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of sql/ with `old` replaced by `new`, once, in `file`."""
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy)
    path = copy / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not unique in {file}"
    path.write_text(text.replace(old, new))
    return copy


def probe(tmp_path: Path, sql: str, module: str) -> tuple[Path, list[Path]]:
    """A one-statement SQL folder and the one module that runs it."""
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "probe.sql").write_text(textwrap.dedent(sql))
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(module))
    return sql_dir, [path]


PROBE_MODULE = """
    from dataclasses import dataclass
    from pathlib import Path
    from uuid import UUID

    from catbird_db.sql import Registry

    _SQL = Registry(Path(__file__).parent / "sql")


    @dataclass(frozen=True, slots=True)
    class Row:
        id: UUID
        epoch: int


    _PROBE = _SQL.query("probe", Row)


    async def probe(conn, convo_id):
        return await conn.fetch_one(_PROBE, {"convo_id": convo_id})
"""


def only(problems: list[Problem]) -> str:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return str(problems[0])


async def test_every_shipped_statement_matches_its_function_and_the_schema(
    database_url: str,
) -> None:
    assert [str(p) for p in await check(database_url)] == []


def test_the_command_exits_zero_when_everything_matches(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--database-url", database_url]) == 0
    assert "every statement matches" in capsys.readouterr().out


async def test_a_broken_tools_statement_is_reported_against_the_tools(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir = broken_copy(
        tmp_path, "tools/grants.sql", "c.relname AS table_name", "c.relname AS relation_name"
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert line.startswith("catbird_db/tools/grants.py:")
    assert "list_table_rights: columns: expected (table_name, privileges)" in line
    assert "no column for table_name; no field for relation_name" in line


async def test_the_demos_statement_matches_the_demo(database_url: str) -> None:
    root = _ROOT
    found = await check(
        database_url, sql_dir=root / "examples" / "sql", modules=[root / "examples" / "demo.py"]
    )
    assert [str(p) for p in found] == []


async def test_a_misnamed_column_is_reported(database_url: str, tmp_path: Path) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "conversations.sql",
        "    c.updated_at,\n    c.external_joins\nFROM conversations AS c\nWHERE\n    c.id",
        "    c.updated_at AS modified_at,\n    c.external_joins\nFROM conversations AS c\nWHERE\n"
        "    c.id",
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert line.startswith("catbird_db/conversations.py:")
    assert "get_conversation: columns: expected (id, creator_did" in line
    assert "no column for updated_at; no field for modified_at" in line


async def test_a_column_the_table_lacks_is_reported(database_url: str, tmp_path: Path) -> None:
    sql_dir = broken_copy(
        tmp_path, "members.sql", "m.member_did > %(after_did)s", "m.membr_did > %(after_did)s"
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert line.startswith("sql/members.sql:") or "/sql/members.sql:" in line
    assert "list_members: does not prepare: column m.membr_did does not exist" in line


async def test_a_column_of_the_wrong_type_is_reported(database_url: str, tmp_path: Path) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "members.sql",
        "    m.joined_seq,\n    m.last_read_seq,\n    (\n",
        "    m.member_did AS joined_seq,\n    m.last_read_seq,\n    (\n",
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert "catbird_db/members.py:" in line
    assert (
        "get_membership: column joined_seq (text) -> Membership.joined_seq: "
        "type: expected str, got int"
    ) in line


async def test_a_nullable_column_into_a_non_optional_field_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "conversations.sql",
        # get_conversation's select list: only it reads the conversation guarded by EXISTS.
        "    c.id,\n    c.creator_did,\n    c.cipher_suite,\n    c.epoch,\n    c.last_seq,\n"
        "    c.title,\n    c.created_at,\n    c.updated_at,\n    c.external_joins\n"
        "FROM conversations AS c\nWHERE\n    c.id = %(convo_id)s\n    AND EXISTS (",
        "    c.id,\n    c.title AS creator_did,\n    c.cipher_suite,\n    c.epoch,\n"
        "    c.last_seq,\n    c.title,\n    c.created_at,\n    c.updated_at,\n"
        "    c.external_joins\nFROM conversations AS c\nWHERE\n    c.id = %(convo_id)s\n"
        "    AND EXISTS (",
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert "get_conversation: column creator_did (text) -> Conversation.creator_did" in line
    assert (
        "may be NULL (conversations.title is nullable): expected an Optional field, got str" in line
    )


async def test_a_misspelled_parameter_in_the_sql_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "conversations.sql",
        "    ON c.id = m.convo_id AND m.member_did = %(actor_did)s AND m.left_at IS NULL;",
        "    ON c.id = m.convo_id AND m.member_did = %(actor_dId)s AND m.left_at IS NULL;",
    )
    line = only(await check(database_url, sql_dir=sql_dir))
    assert "catbird_db/conversations.py:" in line
    assert (
        "get_current_epoch: parameters: expected {actor_dId, convo_id} (the statement's), "
        "got {actor_did, convo_id} (the call's)"
    ) in line


async def test_a_misspelled_parameter_in_the_call_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir, modules = probe(
        tmp_path,
        """\
        -- name: probe
        -- A conversation's epoch.
        SELECT c.id, c.epoch FROM conversations AS c WHERE c.id = %(convo_id)s;
        """,
        PROBE_MODULE.replace('{"convo_id": convo_id}', '{"convo": convo_id}'),
    )
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert "probe.py:" in line
    assert "probe: parameters: expected {convo_id} (the statement's), got {convo}" in line


async def test_a_column_through_a_left_join_may_be_null(database_url: str, tmp_path: Path) -> None:
    sql_dir, modules = probe(
        tmp_path,
        """\
        -- name: probe
        -- epoch is NOT NULL in its table, but the join yields NULL when nothing matches.
        -- not null: id
        SELECT wanted.id, c.epoch
        FROM (SELECT %(convo_id)s::uuid AS id) AS wanted
        LEFT JOIN conversations AS c ON wanted.id = c.id;
        """,
        PROBE_MODULE,
    )
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert (
        "column epoch (int8) -> Row.epoch: may be NULL (conversations.epoch is on the nullable"
        in line
    )


async def test_a_computed_column_must_be_vouched_for(database_url: str, tmp_path: Path) -> None:
    sql = """\
        -- name: probe
        -- A cast of a parameter and a count are never NULL.
        -- not null: id{more}
        SELECT %(convo_id)s::uuid AS id, (SELECT count(*) FROM conversations) AS epoch;
        """
    sql_dir, modules = probe(tmp_path, sql.format(more=""), PROBE_MODULE)
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert "column epoch (int8) -> Row.epoch: may be NULL (computed" in line
    assert "`-- not null: epoch`" in line
    (sql_dir / "probe.sql").write_text(textwrap.dedent(sql.format(more=", epoch (a count)")))
    assert await check(database_url, sql_dir=sql_dir, modules=modules) == []


async def test_vouching_for_a_column_the_statement_lacks_is_reported(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir, modules = probe(
        tmp_path,
        """\
        -- name: probe
        -- not null: id, epoch, unread
        SELECT c.id, c.epoch FROM conversations AS c WHERE c.id = %(convo_id)s;
        """,
        PROBE_MODULE,
    )
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert "`not null:` names unread, which the statement does not return" in line


async def test_fetch_value_of_two_columns_is_reported(database_url: str, tmp_path: Path) -> None:
    sql_dir, modules = probe(
        tmp_path,
        """\
        -- name: probe
        -- Two columns where one is read.
        SELECT c.id, c.epoch FROM conversations AS c WHERE c.id = %(convo_id)s;
        """,
        PROBE_MODULE.replace('_SQL.query("probe", Row)', '_SQL.scalar("probe", UUID)').replace(
            "fetch_one(_PROBE", "fetch_value(_PROBE"
        ),
    )
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert "fetch_value reads one column: expected 1, got 2 ({epoch, id})" in line


async def test_a_scalar_of_another_type_is_reported(database_url: str, tmp_path: Path) -> None:
    sql_dir, modules = probe(
        tmp_path,
        """\
        -- name: probe
        -- A conversation's epoch.
        SELECT c.epoch FROM conversations AS c WHERE c.id = %(convo_id)s;
        """,
        PROBE_MODULE.replace('_SQL.query("probe", Row)', '_SQL.scalar("probe", str)').replace(
            "fetch_one(_PROBE", "fetch_value(_PROBE"
        ),
    )
    line = only(await check(database_url, sql_dir=sql_dir, modules=modules))
    assert "probe: column epoch (int8): type: expected int, got str" in line


async def test_a_renamed_statement_is_missing_for_its_binding_and_dead_sql(
    database_url: str, tmp_path: Path
) -> None:
    sql_dir = broken_copy(
        tmp_path, "conversations.sql", "-- name: get_current_epoch\n", "-- name: get_epoch\n"
    )
    found = [str(p) for p in await check(database_url, sql_dir=sql_dir)]
    assert len(found) == 2, found
    [missing] = [line for line in found if ".py:" in line]
    [dead] = [line for line in found if ".sql:" in line]
    assert missing.startswith("catbird_db/conversations.py:")
    assert "get_current_epoch: no statement of that name in the SQL" in missing
    assert "get_epoch: no module binds this statement (dead SQL)" in dead


def test_the_command_reports_a_statement_no_module_binds(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "conversations.sql",
        "-- name: get_current_epoch\n",
        "-- name: count_conversations\n-- Nothing runs this.\n"
        "SELECT count(*) FROM conversations;\n\n-- name: get_current_epoch\n",
    )
    code = cli.main(["check", "--database-url", database_url, "--sql-dir", str(sql_dir)])
    captured = capsys.readouterr()
    assert code == 1
    [line] = captured.out.splitlines()
    assert "sql/conversations.sql:" in line
    assert "count_conversations: no module binds this statement (dead SQL)" in line


def test_the_command_prints_one_line_per_problem_and_exits_non_zero(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql_dir = broken_copy(
        tmp_path,
        "members.sql",
        "%(member_did)s AND m.left_at IS NULL\n    )\n) AS is_member",
        "%(member)s AND m.left_at IS NULL\n    )\n) AS is_member",
    )
    code = cli.main(["check", "--database-url", database_url, "--sql-dir", str(sql_dir)])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("catbird_db/members.py:")
    assert "is_member: parameters: expected {convo_id, member} (the statement's)" in lines[0]
    assert "1 problem" in captured.err


@pytest.mark.parametrize(
    ("sql", "nullable"),
    [
        ("SELECT a.x FROM a INNER JOIN b ON a.id = b.id", set()),
        ("SELECT a.x FROM a LEFT JOIN b ON a.id = b.id", {"b"}),
        ("SELECT a.x FROM a LEFT OUTER JOIN public.b AS bb ON TRUE", {"b"}),
        (
            "SELECT a.x FROM a LEFT JOIN LATERAL (SELECT y FROM c) AS l ON TRUE",
            {"select", "y", "from", "c"},
        ),
        (
            "WITH w AS (SELECT y FROM c) SELECT a.x FROM a LEFT JOIN w ON TRUE",
            {"w", "select", "y", "from", "c"},
        ),
        ("SELECT 'left join b' FROM a -- left join c\n", set()),
        ('SELECT a.x FROM a LEFT JOIN "Odd" ON TRUE', {"Odd"}),
    ],
)
def test_outer_joined_names_the_nullable_side(sql: str, nullable: set[str]) -> None:
    assert outer_joined(sql) == frozenset(nullable)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a.x FROM a RIGHT JOIN b ON TRUE",
        "SELECT a.x FROM a FULL OUTER JOIN b ON TRUE",
        "SELECT a.x FROM a GROUP BY ROLLUP (a.x)",
        "SELECT a.x FROM a GROUP BY GROUPING SETS ((a.x), ())",
    ],
)
def test_right_full_joins_and_grouping_sets_make_every_table_nullable(sql: str) -> None:
    assert outer_joined(sql) is None
