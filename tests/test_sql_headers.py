"""Every runtime statement's header says the same things in the same order, and every CTE
says what it is (docs/tuning.md, "Reading a statement's header"). No database needed.

A header is the comment lines after `-- name:`: a summary of its own, then `Returns:`,
`Locks:`, `Index:`, `Notifies:` (only for a statement that calls pg_notify) and
`not null:`, each label starting a line and running on to the next label.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_plans import ENFORCES, INTENDED, NOT_PLANNED

from catbird_db._paths import SQL_DIR
from catbird_db.sql import Statement, load_registry, registry
from catbird_db.tools.usage import TOOLS_DIR

LABELS = ("Returns", "Locks", "Index", "Notifies", "not null")
REQUIRED = ("Returns", "Locks", "Index")
# Several `not null:` lines may stand together; every other label stands once.
REPEATABLE = frozenset({"not null"})

_LABEL = re.compile(r"^--\s*(?P<label>Returns|Locks|Index|Notifies|not null):\s*(?P<text>.*)$")
_NOTIFY = re.compile(r"\bpg_notify\s*\(", re.IGNORECASE)
_LOCKS = re.compile(
    r"\bFOR\s+(?:UPDATE|NO\s+KEY\s+UPDATE|SHARE|KEY\s+SHARE)\b|\b(?:UPDATE|DELETE|INSERT)\b",
    re.IGNORECASE,
)
_COMMENTS_AND_STRINGS = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.DOTALL)
# A CTE opens on a line of its own: `name AS (`, `WITH name AS (`, with a column list
# or MATERIALIZED if need be. Its first line inside the parentheses is the comment.
_CTE = re.compile(
    r"^\s*(?:WITH\s+(?:RECURSIVE\s+)?)?(?P<name>[a-z_][a-z0-9_]*)(?:\s*\([^)]*\))?"
    r"\s+AS\s+(?:(?:NOT\s+)?MATERIALIZED\s+)?\((?P<rest>.*)$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Header:
    """A statement's doc lines: the summary before the first label, then each label with
    its text (its continuation lines joined), in file order."""

    summary: str
    sections: tuple[tuple[str, str], ...]

    def text(self, label: str) -> str | None:
        found = [text for name, text in self.sections if name == label]
        return " ".join(found) if found else None


def header(stmt: Statement) -> Header:
    """The header of `stmt`, read from its file: the comment lines after its name line."""
    lines = stmt.path.read_text(encoding="utf-8").splitlines()[stmt.line :]
    summary: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for raw in lines:
        line = raw.strip()
        if not line.startswith("--"):
            break
        match = _LABEL.match(line)
        if match:
            sections.append((match["label"], [match["text"]]))
        elif sections:
            sections[-1][1].append(line.lstrip("-").strip())
        else:
            summary.append(line.lstrip("-").strip())
    return Header(
        " ".join(summary).strip(),
        tuple((label, " ".join(text).strip()) for label, text in sections),
    )


def code(stmt: Statement) -> str:
    """The statement's SQL without its comments and string literals."""
    return _COMMENTS_AND_STRINGS.sub(" ", stmt.text)


def header_problems(stmt: Statement) -> list[str]:
    """What is wrong with `stmt`'s header: labels missing, repeated or out of order; a
    `Notifies:` that does not match pg_notify in the body; no locks named by a statement
    that writes or locks rows."""
    head = header(stmt)
    problems: list[str] = []
    if not head.summary:
        problems.append("no summary before the first label")
    labels = [label for label, _ in head.sections]
    for label in REQUIRED:
        if label not in labels:
            problems.append(f"no `{label}:` line")
    for label in set(labels) - REPEATABLE:
        if labels.count(label) > 1:
            problems.append(f"`{label}:` stands {labels.count(label)} times")
    ranks = [LABELS.index(label) for label in labels]
    if ranks != sorted(ranks):
        problems.append(f"labels {labels} are not in the order {list(LABELS)}")
    for label, text in head.sections:
        if not text:
            problems.append(f"`{label}:` says nothing")
    body = code(stmt)
    notifies = _NOTIFY.search(body) is not None
    if notifies and "Notifies" not in labels:
        problems.append("calls pg_notify, but the header has no `Notifies:` line")
    if not notifies and "Notifies" in labels:
        problems.append("has a `Notifies:` line, but its body calls no pg_notify")
    writes = _LOCKS.search(body)
    locks = head.text("Locks")
    if writes and locks is not None and locks.rstrip(".").strip().lower() == "none":
        problems.append(f"says `Locks: none`, but its body has {writes[0]!r}")
    return problems


def cte_problems(paths: Iterable[Path]) -> list[str]:
    """Each CTE of the files whose first line inside its parentheses is not a comment."""
    problems: list[str] = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            match = _CTE.match(line)
            if match is None or line.lstrip().startswith("--"):
                continue
            following = lines[number] if number < len(lines) else ""
            first = match["rest"].strip() or following.strip()
            if not first.startswith("--"):
                problems.append(
                    f"{path.name}:{number}: CTE {match['name']} does not open with a comment"
                )
    return problems


def choices(need: str | frozenset[str]) -> frozenset[str]:
    """An INTENDED need as the indexes any one of which serves it."""
    return frozenset({need}) if isinstance(need, str) else need


def index_names(text: str) -> set[str]:
    """The indexes the plan tests know that `text` names."""
    known = set(ENFORCES).union(*(choices(n) for needs in INTENDED.values() for n in needs))
    return set(_WORD.findall(text)) & known


@pytest.mark.parametrize("name", sorted(registry()))
def test_the_header_has_its_labels_in_order_and_matches_the_body(name: str) -> None:
    problems = header_problems(registry()[name])
    assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", sorted(registry()))
def test_the_header_names_the_indexes_the_plan_tests_hold_it_to(name: str) -> None:
    text = header(registry()[name]).text("Index") or ""
    named = index_names(text)
    if name in NOT_PLANNED or not INTENDED.get(name):
        assert not named, f"{name}: `Index:` names {sorted(named)}, and no plan needs them"
        assert text.lower().startswith("none"), f"{name}: `Index:` should say none, and why"
        return
    needs = INTENDED[name]
    missing = [n for n in needs if not choices(n) & named]
    allowed = set(ENFORCES).union(*(choices(n) for n in needs))
    assert not missing, f"{name}: `Index:` leaves out {missing} (tests/test_plans.py INTENDED)"
    assert named <= allowed, f"{name}: `Index:` names {sorted(named - allowed)}, not in INTENDED"


def test_every_cte_opens_with_a_comment_saying_what_it_is() -> None:
    paths = [*sorted(SQL_DIR.glob("*.sql")), *sorted(TOOLS_DIR.glob("*.sql"))]
    assert paths
    problems = cte_problems(paths)
    assert not problems, "\n".join(problems)


def write(tmp_path: Path, text: str) -> dict[str, Statement]:
    (tmp_path / "things.sql").write_text(textwrap.dedent(text), encoding="utf-8")
    return dict(load_registry(tmp_path))


def test_a_header_in_the_format_passes(tmp_path: Path) -> None:
    statements = write(
        tmp_path,
        """\
        -- name: take_thing
        -- Takes a thing.
        -- Returns: the thing; no row when
        -- it is taken.
        -- Locks: the thing's row, FOR UPDATE.
        -- Index: things_pkey.
        -- Notifies: `channel`, its id.
        -- not null: id
        -- not null: taken
        SELECT id, pg_notify(%(channel)s, id::text) AS taken FROM things FOR UPDATE;

        -- name: get_thing
        -- One thing; 'UPDATE' in a string or a comment is no write.
        -- Returns: the thing.
        -- Locks: none.
        -- Index: things_pkey.
        SELECT 'UPDATE' AS id FROM things; -- DELETE
        """,
    )
    assert {name: header_problems(stmt) for name, stmt in statements.items()} == {
        "take_thing": [],
        "get_thing": [],
    }
    assert header(statements["take_thing"]).text("Returns") == "the thing; no row when it is taken."


@pytest.mark.parametrize(
    ("doc", "body", "problem"),
    [
        (
            "-- Returns: it.\n-- Index: none.",
            "SELECT 1;",
            "no `Locks:` line",
        ),
        (
            "-- Returns: it.\n-- Index: none.\n-- Locks: none.",
            "SELECT 1;",
            "are not in the order",
        ),
        (
            "-- Returns: it.\n-- Locks: none.\n-- Index: t_pkey.",
            "SELECT id FROM t WHERE id = 1 FOR NO KEY UPDATE;",
            "says `Locks: none`, but its body has 'FOR NO KEY UPDATE'",
        ),
        (
            "-- Returns: no rows.\n-- Locks: none.\n-- Index: t_pkey.",
            "DELETE FROM t WHERE id = 1;",
            "says `Locks: none`, but its body has 'DELETE'",
        ),
        (
            "-- Returns: it.\n-- Locks: none.\n-- Index: none.\n-- Notifies: c.",
            "SELECT 1;",
            "has a `Notifies:` line, but its body calls no pg_notify",
        ),
        (
            "-- Returns: it.\n-- Locks: none.\n-- Index: none.",
            "SELECT pg_notify('c', 'x');",
            "calls pg_notify, but the header has no `Notifies:` line",
        ),
        (
            "-- Returns: it.\n-- Returns: again.\n-- Locks: none.\n-- Index: none.",
            "SELECT 1;",
            "`Returns:` stands 2 times",
        ),
    ],
)
def test_a_header_out_of_the_format_fails(
    tmp_path: Path, doc: str, body: str, problem: str
) -> None:
    (tmp_path / "things.sql").write_text(
        f"-- name: thing\n-- A thing.\n{doc}\n{body}\n", encoding="utf-8"
    )
    problems = header_problems(load_registry(tmp_path)["thing"])
    assert any(problem in p for p in problems), problems


def test_a_cte_without_its_comment_fails(tmp_path: Path) -> None:
    path = tmp_path / "things.sql"
    path.write_text(
        textwrap.dedent(
            """\
            -- name: two
            -- Two.
            WITH one AS (
                -- The first.
                SELECT 1 AS n
            ),

            two AS (
                SELECT 2 AS n
            ),

            three AS (SELECT 3 AS n)

            SELECT n FROM one UNION ALL SELECT n FROM two UNION ALL SELECT n FROM three;
            """
        ),
        encoding="utf-8",
    )
    assert cte_problems([path]) == [
        "things.sql:8: CTE two does not open with a comment",
        "things.sql:12: CTE three does not open with a comment",
    ]
