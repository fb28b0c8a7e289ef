"""Every named statement is bound once and run by exactly one function, and every
binding's statement exists: no dead SQL, no missing SQL (the modules' bindings, and their
uses read from the source). Each registry is held to its own modules: the runtime SQL to
the library, the tools' SQL to the tools, the demo's and the plan tests' SQL to the demo
and the plan tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from catbird_db.sql import load_registry, registry
from catbird_db.tools import sql as tools_sql
from catbird_db.tools.usage import PACKAGE_DIR, TOOLS_DIR, analyse, package_modules

_ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def messages(sql_dir: Path, *modules: Path) -> list[str]:
    return [
        f"{p.statement}: {p.message}" for p in analyse(load_registry(sql_dir), modules).problems
    ]


def sql_dir_with(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "sql"
    folder.mkdir()
    write(
        folder / "probe.sql",
        "".join(f"-- name: {n}\n-- A probe.\nSELECT %(x)s::int AS x;\n\n" for n in names),
    )
    return folder


HEADER = """\
    from pathlib import Path

    from catbird_db.sql import Registry

    _SQL = Registry(Path(__file__).parent / "sql")
"""


def test_every_statement_is_bound_and_run_by_exactly_one_function() -> None:
    assert [str(p) for p in analyse(registry(), package_modules()).problems] == []


def test_every_tools_statement_is_bound_and_run_by_exactly_one_tool_function() -> None:
    usage = analyse(tools_sql.registry(), package_modules(TOOLS_DIR))
    assert [str(p) for p in usage.problems] == []


def test_the_demo_and_the_plan_tests_run_each_of_their_statements() -> None:
    for folder, modules in [
        (_ROOT / "examples" / "sql", [_ROOT / "examples" / "demo.py"]),
        (
            _ROOT / "tests" / "sql",
            [_ROOT / "tests" / "plans.py", _ROOT / "tests" / "shared_database.py"],
        ),
    ]:
        usage = analyse(load_registry(folder), modules)
        assert [str(p) for p in usage.problems] == []
        assert usage.uses, modules


def test_every_module_that_binds_statements_is_scanned() -> None:
    found = {p.name for p in package_modules()}
    assert {"_access.py", "conversations.py", "members.py", "database.py", "_connect.py"} <= found
    assert "_executor.py" in found
    assert "models.py" not in found
    assert all(p.parent == PACKAGE_DIR for p in package_modules())
    tools = {p.name for p in package_modules(TOOLS_DIR)}
    assert {"describe.py", "grants.py", "seed.py"} <= tools  # the tools' own catalog statements
    assert all(p.parent == TOOLS_DIR for p in package_modules(TOOLS_DIR))
    assert found.isdisjoint({"describe.py", "grants.py", "seed.py", "cli.py"})


def test_a_statement_no_module_binds_is_dead_sql(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used", "unused")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def used(conn):
        return await conn.fetch_value(_USED, {"x": 1})
    """,
    )
    assert messages(sql_dir, module) == ["unused: no module binds this statement (dead SQL)"]


def test_binding_a_statement_the_sql_lacks_is_missing_sql(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)
    _TYPO = _SQL.scalar("usde", int)

    async def used(conn):
        return await conn.fetch_value(_USED, {"x": 1})

    async def typo(conn):
        return await conn.fetch_value(_TYPO, {"x": 1})
    """,
    )
    [message] = messages(sql_dir, module)  # the binding fails the import
    assert message.startswith(": does not import: no named statement 'usde'"), message


def test_a_statement_run_by_two_functions_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def one(conn):
        return await conn.fetch_value(_USED, {"x": 1})

    async def two(conn):
        return await conn.fetch_value(_USED, {"x": 2})
    """,
    )
    assert messages(sql_dir, module) == [
        "used: run by 2 functions (one, two); each statement belongs to exactly one"
    ]


def test_a_statement_bound_but_never_run_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(tmp_path / "m.py", HEADER + '    _USED = _SQL.scalar("used", int)\n')
    assert messages(sql_dir, module) == ["used: _USED is bound but never run"]


def test_a_statement_bound_in_two_modules_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    body = (
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def used(conn):
        return await conn.fetch_value(_USED, {"x": 1})
    """
    )
    first, second = write(tmp_path / "a.py", body), write(tmp_path / "b.py", body)
    assert messages(sql_dir, first, second) == [
        f"used: bound again (first at {first}:6)",
    ]


def test_a_statement_bound_inside_a_function_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    async def used(conn):
        return await conn.fetch_value(_SQL.scalar("used", int), {"x": 1})
    """,
    )
    assert messages(sql_dir, module) == [
        ': bind statements at module level: _X = query("name", Row)',
        "used: no module binds this statement (dead SQL)",
    ]


def test_params_built_other_than_as_a_dict_literal_are_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def used(conn, x):
        return await conn.fetch_value(_USED, dict(x=x))
    """,
    )
    assert messages(sql_dir, module) == [
        "used: params must be a dict literal with literal string keys, or a variable assigned one"
    ]


def test_params_changed_after_they_are_built_are_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def used(conn, x):
        params = {"x": x}
        params["y"] = x
        return await conn.fetch_value(_USED, params)
    """,
    )
    assert messages(sql_dir, module) == [
        "used: params 'params' is changed after it is built; params must be a dict literal "
        "with literal string keys, or a variable assigned one"
    ]


def test_a_statement_passed_anywhere_but_a_helper_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _USED = _SQL.scalar("used", int)

    async def used(conn, run):
        return await run(conn, _USED, {"x": 1})
    """,
    )
    [message] = messages(sql_dir, module)
    assert message.startswith("used: cannot follow this use: run it as the first argument of")


def test_raw_psycopg_calls_are_followed_through_text(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "one", "many", "bulk")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _ONE = _SQL.statement("one")
    _MANY = _SQL.statement("many")
    _BULK = _SQL.statement("bulk")

    def one(conn, x):
        params = {"x": x}
        return conn.execute(_ONE.text, params)

    def many(cur, xs):
        cur.executemany(_MANY.text, [{"x": x} for x in xs])

    def bulk(cur):
        with cur.copy(_BULK.text) as copy:
            return copy
    """,
    )
    usage = analyse(load_registry(sql_dir), [module])
    assert usage.problems == ()
    assert {u.statement: (u.helper, u.params) for u in usage.uses} == {
        "one": ("text", frozenset({"x"})),
        "many": ("text", frozenset({"x"})),
        "bulk": ("text", frozenset()),
    }


def test_raw_psycopg_calls_are_followed_through_compose(tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    write(
        folder / "grants.sql", "-- name: grant_it\n-- A grant.\nGRANT SELECT ON t TO {grantee};\n"
    )
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    _GRANT_IT = _SQL.statement("grant_it")

    async def grant_it(conn, role):
        await conn.execute(_GRANT_IT.compose(grantee=role))
    """,
    )
    usage = analyse(load_registry(folder), [module])
    assert usage.problems == ()
    assert [(u.statement, u.helper, u.params) for u in usage.uses] == [
        ("grant_it", "text", frozenset())
    ]


def test_a_row_class_that_is_not_a_dataclass_is_reported(tmp_path: Path) -> None:
    sql_dir = sql_dir_with(tmp_path, "used")
    module = write(
        tmp_path / "m.py",
        HEADER
        + """\
    class Row:
        x: int

    _USED = _SQL.query("used", Row)

    async def used(conn):
        return await conn.fetch_one(_USED, {"x": 1})
    """,
    )
    [message] = messages(sql_dir, module)
    assert message == ": does not import: probe.used: Row is not a dataclass"


def test_row_fields_are_read_through_imports_aliases_and_base_classes() -> None:
    usage = analyse(registry(), package_modules())
    [use] = [u for u in usage.uses if u.statement == "get_membership"]
    assert use.model is not None
    fields = {f.name: f for f in use.model.fields}
    assert list(fields)[-2:] == ["last_read_seq", "unread_count"]  # Member's, then its own
    assert fields["role"].types == frozenset({"str"})  # Role = Literal["admin", "member"]
    assert fields["left_at"].optional
    assert fields["left_at"].types == frozenset({"datetime"})
    assert use.params == frozenset({"convo_id", "member_did"})
