"""The docs as the doc tests read them: fenced blocks, prose, inline code spans.

The pages are README.md and docs/*.md. A fenced block opens with a line of three
backticks and a language (indented, inside a list item, is fine) and closes with three
backticks at the same indentation; its text is dedented by that indentation. Prose is
everything outside the blocks; a code span is text in single backticks, which may run
over a line break inside a paragraph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[^`\s]*)\s*$")
_SPAN = re.compile(r"(?<!`)`(?!`)([^`]+?)`(?!`)")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block: where it is, its language and its text."""

    page: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True, slots=True)
class Span:
    """One inline code span of the prose, whitespace collapsed."""

    page: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def name(page: Path) -> str:
    """The page as the tests' ids name it: README.md, docs/usage.md."""
    return str(page.relative_to(ROOT))


def _split(page: Path) -> tuple[list[Block], list[str]]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose = list(lines)
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent = opened["indent"]
        end = i + 1
        while end < len(lines) and lines[end] != f"{indent}```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{name(page)}:{i + 1}: a fenced block is never closed")
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        blocks.append(Block(page, i + 1, opened["lang"], "\n".join(body) + "\n"))
        for j in range(i, end + 1):
            prose[j] = ""
        i = end + 1
    return blocks, prose


def blocks(page: Path, *langs: str) -> list[Block]:
    """The page's fenced blocks, of these languages only if any are given."""
    found, _ = _split(page)
    return [b for b in found if not langs or b.lang in langs]


def prose(page: Path) -> list[str]:
    """The page's lines with every fenced block blanked out (line numbers kept)."""
    return _split(page)[1]


def spans(page: Path) -> list[Span]:
    """The inline code spans of the page's prose, paragraph by paragraph."""
    found: list[Span] = []
    lines = prose(page)
    start = 0
    for i in range(len(lines) + 1):
        if i < len(lines) and lines[i].strip():
            continue
        paragraph = "\n".join(lines[start:i])
        for match in _SPAN.finditer(paragraph):
            line = start + 1 + paragraph.count("\n", 0, match.start())
            found.append(Span(page, line, " ".join(match[1].split())))
        start = i + 1
    return found


def headings(page: Path) -> list[tuple[int, str]]:
    """Each heading of the prose: its line number and its text."""
    return [
        (i + 1, line.lstrip("#").strip())
        for i, line in enumerate(prose(page))
        if re.match(r"#{1,6} ", line)
    ]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return text.replace(" ", "-")


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a shell block: `VAR=value ... program args`, comments dropped, a
    line continued by a backslash joined, commands chained by `&&` apart."""

    where: str
    env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]

    @property
    def program(self) -> str | None:
        return self.argv[0] if self.argv else None


_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")


def commands(block: Block) -> list[Command]:
    """The commands of an sh or console block (a console block's are its `$ ` lines)."""
    import shlex

    lines = block.text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined: list[tuple[int, str]] = []
    carry = ""
    for offset, line in enumerate(lines, start=1):
        if line.rstrip().endswith("\\"):
            carry += line.rstrip()[:-1] + " "
            continue
        joined.append((offset, carry + line))
        carry = ""
    found: list[Command] = []
    for offset, line in joined:
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            part, tokens = tokens[:cut], tokens[cut + 1 :]
            env = []
            while part and _ASSIGNMENT.match(part[0]):
                key, _, value = part.pop(0).partition("=")
                env.append((key, value))
            where = f"{block.page.relative_to(ROOT)}:{block.line + offset}"
            found.append(Command(where, tuple(env), tuple(part)))
    return found
