"""Every code block of README.md and docs/*.md is run, or held to the real thing: the
rules for writers are in docs/README.md, "How the snippets are tested".

- python: a page's blocks run in order, as one program with top-level await, against
  a fresh migrated database: one database per page. Before each block the givens
  (`GIVENS` below, the names docs/README.md lists) are set again, so a block that opens
  its own `Database` as `db` leaves the next block the given one.
- sh, console: each `catbird-db` command of the cheap and safe kinds (`RUN`) runs, in
  order, against a fresh migrated database whose URL replaces every `DATABASE_URL`,
  `$DATABASE_URL`, `$URL` and `--database-url` the page writes; the others are only
  parsed (tests/test_docs.py). `CATBIRD_DB_*` settings are read by `DbConfig.from_env`.
- sql: every statement is prepared (parsed and analysed against the migrated schema,
  not run); a utility statement, which PostgreSQL analyses only when it runs, is run in
  a transaction that is rolled back.
- mermaid: the schema diagram's tables, columns and types are the migrated schema's.
- ini: parses as an ini file.
- pyi (docs/reference.md) and text: tests/test_docs.py.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
from collections.abc import Iterator
from typing import Any

import docblocks
import psycopg
import pytest
from docblocks import PAGES

from catbird_db import Database, DbConfig, conversations
from catbird_db.tools import cli

from support import fake_key_package, fake_welcome

ALICE = "did:plc:alice"
BOB = "did:plc:bob"
CAROL = "did:web:carol.example"

# The sh commands run: each is quick and touches only the test's own database.
RUN = {"migrate", "status", "check", "explain", "rollback"}
# Not run, and why (each is still parsed against the real argument parser):
NOT_RUN = {
    "grant": "needs a role, and roles belong to the whole server, not the test's database "
    "(tests/test_privileges.py grants to roles of its own)",
    "new": "writes migration files into the checkout's migrations/",
    "seed": "takes seconds to minutes at the scales the docs write (tests/test_seed.py)",
}
# Other programs are not run: `make` targets install .venv and run the suite or the demo
# (tests/test_docs.py checks each target and variable against the Makefile); createdb,
# createuser and the service itself change or need a server of the reader's.


def _pages(*langs: str) -> list[Any]:
    return [
        pytest.param(page, id=docblocks.name(page))
        for page in PAGES
        if docblocks.blocks(page, *langs)
    ]


# -- python ----------------------------------------------------------------------------


def mls_key_package() -> bytes:
    """A stand-in for a client's MLS library: a KeyPackage message of suite 1."""
    return fake_key_package()


def mls_add(*key_data: bytes) -> tuple[bytes, bytes]:
    """A stand-in for a client's MLS library adding members by these key packages: the
    commit and one Welcome addressed to all of them."""
    return os.urandom(64), fake_welcome(key_data)


async def _givens(db: Database) -> dict[str, Any]:
    convo = await conversations.create_conversation_with_members(
        db, actor_did=ALICE, cipher_suite=1, member_dids=[BOB]
    )
    return {
        "db": db,
        "alice": ALICE,
        "bob": BOB,
        "carol": CAROL,
        "convo_id": convo.id,
        "mls_key_package": mls_key_package,
        "mls_add": mls_add,
    }


GIVENS = ("db", "alice", "bob", "carol", "convo_id", "mls_key_package", "mls_add")


async def _run(block: docblocks.Block, namespace: dict[str, Any]) -> None:
    import ast

    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(block.text, f"{block.where}", "exec", flags=flags)
    result = eval(code, namespace)  # the docs' own snippets
    if result is not None:
        await result


@pytest.mark.parametrize("page", _pages("python"))
async def test_python_snippets_run(
    page: Any, db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CATBIRD_DB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DATABASE_URL", database_url)
    givens = await _givens(db)
    assert set(givens) == set(GIVENS)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in docblocks.blocks(page, "python"):
        namespace.update(givens)
        try:
            await _run(block, namespace)
        except Exception as exc:
            raise AssertionError(f"{block.where}: the snippet raised {exc!r}") from exc


# -- sh and console --------------------------------------------------------------------


def _with_test_url(argv: tuple[str, ...], url: str) -> list[str]:
    out = [re.sub(r"\$\{?(DATABASE_URL|URL)\}?", url, a) for a in argv]
    for i, arg in enumerate(out[:-1]):
        if arg == "--database-url":
            out[i + 1] = url
    return out


@pytest.mark.parametrize("page", _pages("sh", "console"))
def test_shell_snippets_run(
    page: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    url: str | None = None
    for block in docblocks.blocks(page, "sh", "console"):
        for command in docblocks.commands(block):
            settings = dict(command.env)
            if command.program is None:
                _check_settings(command.where, settings)
                continue
            if command.program != "catbird-db":
                continue
            argv = list(command.argv[1:])
            sub = next((a for a in argv if not a.startswith("-")), None)
            if "--help" in argv or "--version" in argv:
                ran.append(_main(command.where, argv, expect=0))
                continue
            if sub not in RUN:
                assert sub in NOT_RUN, f"{command.where}: say whether `catbird-db {sub}` runs"
                continue
            if url is None:
                url = request.getfixturevalue("database_url")
            for key in [k for k in os.environ if k.startswith("CATBIRD_DB_")]:
                monkeypatch.delenv(key)
            monkeypatch.setenv("DATABASE_URL", url)
            ran.append(_main(command.where, _with_test_url(command.argv, url)[1:], expect=0))
    assert ran or page.name != "README.md", "the README's commands ran none"


def _main(where: str, argv: list[str], *, expect: int) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # --help
            code = int(exc.code or 0)
    assert code == expect, f"{where}: catbird-db {' '.join(argv)}: exit {code}: {err.getvalue()}"
    return out.getvalue()


def _check_settings(where: str, settings: dict[str, str]) -> None:
    """A block line of settings only: the CATBIRD_DB_ ones are read as DbConfig reads them."""
    if not any(k.startswith("CATBIRD_DB_") or k == "DATABASE_URL" for k in settings):
        return
    try:
        DbConfig.from_env({k: v for k, v in settings.items()})
    except ValueError as exc:
        raise AssertionError(f"{where}: {exc}") from None


def test_the_settings_of_a_block_are_read_together() -> None:
    """The pgbouncer page's settings block, read as one environment: the pooler setting
    with its listen URL."""
    for page in PAGES:
        for block in docblocks.blocks(page, "sh", "console"):
            env: dict[str, str] = {}
            for command in docblocks.commands(block):
                if command.program is None:
                    env.update(command.env)
            if any(k.startswith("CATBIRD_DB_") for k in env):
                try:
                    DbConfig.from_env(env)
                except ValueError as exc:
                    raise AssertionError(f"{block.where}: {exc}") from None


# -- sql -------------------------------------------------------------------------------

_UTILITY = re.compile(r"^\s*(REVOKE|GRANT|ALTER|CREATE|DROP|SET|COMMENT)\b", re.IGNORECASE)


def _statements(text: str) -> Iterator[str]:
    import sqlparse

    for statement in sqlparse.split(text):
        body = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
        if body:
            yield body


def _numbered(statement: str) -> str:
    """psycopg's `%(name)s` placeholders as the server's `$1`, `$2`, ..."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement)


@pytest.mark.parametrize("page", _pages("sql"))
def test_sql_snippets_prepare_against_the_schema(page: Any, raw: psycopg.Connection[Any]) -> None:
    # The tuning page's pg_stat_statements query needs the extension it names.
    raw.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    count = 0
    for block in docblocks.blocks(page, "sql"):
        statements = list(_statements(block.text))
        assert statements, f"{block.where}: a sql block with no statement"
        for statement in statements:
            count += 1
            where = f"{block.where}: {statement[:60]}..."
            if _UTILITY.match(statement):
                try:
                    with raw.transaction(force_rollback=True):
                        raw.execute(statement)
                except psycopg.Error as exc:
                    raise AssertionError(f"{where}: {exc}") from None
                continue
            name, text = f"docs_{count}".encode(), _numbered(statement).encode()
            result = raw.pgconn.prepare(name, text)
            if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
                raise AssertionError(f"{where}: {result.error_message.decode(errors='replace')}")


# -- mermaid and ini -------------------------------------------------------------------

_TYPES = {"timestamptz": "timestamp with time zone"}


@pytest.mark.parametrize("page", _pages("mermaid"))
def test_the_schema_diagram_is_the_schema(page: Any, raw: psycopg.Connection[Any]) -> None:
    """Each entity of an erDiagram is a table with exactly those columns, types and
    primary key; every table of the schema (yoyo's aside) is drawn."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for block in docblocks.blocks(page, "mermaid"):
        for name, body in re.findall(r"^\s*(\w+) \{\n(.*?)^\s*\}", block.text, re.M | re.S):
            tables[name] = [
                (column, _TYPES.get(kind, kind), "PK" in keys)
                for kind, column, keys in re.findall(r"^\s*(\w+) (\w+)(.*)$", body, re.M)
            ]
    rows = raw.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
            coalesce(a.attnum = ANY (i.indkey), false)
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_index AS i ON i.indrelid = c.oid AND i.indisprimary
        WHERE c.relkind = 'r' AND c.relname NOT LIKE '%yoyo%'
        ORDER BY c.relname, a.attnum
        """
    ).fetchall()
    schema: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, kind, primary in rows:
        schema.setdefault(table, []).append((column, kind, primary))
    assert tables == schema


@pytest.mark.parametrize("page", _pages("ini"))
def test_ini_snippets_parse(page: Any) -> None:
    """The PgBouncer settings the page shows parse as PgBouncer's ini format does (`;`
    comments, also after a value); tests/test_pgbouncer.py runs a real PgBouncer."""
    for block in docblocks.blocks(page, "ini"):
        parser = configparser.ConfigParser(inline_comment_prefixes=(";",), strict=True)
        parser.read_string(block.text)
        assert parser.sections(), f"{block.where}: no section"
