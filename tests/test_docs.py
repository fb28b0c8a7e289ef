"""The docs hold what the code has: every public name, config field and command, with
signatures as the code spells them. The rules are written for doc writers in
docs/README.md; the snippets themselves are run by tests/test_docs_snippets.py.

No database: these read the docs and the source.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fnmatch
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import docblocks
from docblocks import PAGES, ROOT

import catbird_db
from catbird_db import Database, DbConfig, Transaction
from catbird_db.tools import cli

REFERENCE = ROOT / "docs" / "reference.md"
PACKAGE = "catbird_db"
PUBLIC_MODULES = (
    PACKAGE,
    *sorted(
        f"{PACKAGE}.{m.name}"
        for m in pkgutil.iter_modules(catbird_db.__path__)
        if not m.name.startswith("_") and m.name != "tools"
    ),
)
ENTITY_MODULES = ("blobs", "conversations", "key_packages", "members", "messages", "welcomes")
KNOWN_LANGS = {"python", "pyi", "sh", "console", "sql", "ini", "mermaid", "text"}

Key = tuple[str, str, str, str | None, tuple[str, ...]]


def _fail(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# -- every block says what it is -------------------------------------------------------


def test_every_fenced_block_names_a_language_the_doc_tests_know() -> None:
    """An untagged block, or one of a language no rule covers, would escape every test:
    a writer says `text` for output and pictures."""
    problems = [
        f"{b.where}: a block of language {b.lang!r}: use one of {sorted(KNOWN_LANGS)}"
        for page in PAGES
        for b in docblocks.blocks(page)
        if b.lang not in KNOWN_LANGS
    ]
    _fail(problems)


# -- the reference: every public name, as the code spells it ---------------------------


def _source(module: str) -> ast.Module:
    parts = module.split(".")
    path = ROOT.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = ROOT.joinpath(*parts, "__init__.py")
    return ast.parse(path.read_text(encoding="utf-8"))


_MODULE = object()


def _locate(module: str, name: str) -> tuple[str, ast.stmt] | object | None:
    """Where `name`, as `module` binds it, is defined: (module, node), _MODULE for a
    submodule, None for a name from outside the package."""
    for node in _source(module).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return module, node
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return module, node
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                return module, node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) != name:
                    continue
                if node.level == 0:
                    return None
                package = module if module == PACKAGE else module.rsplit(".", 1)[0]
                target = f"{package}.{node.module}" if node.module else package
                if node.module is None:
                    return _MODULE
                return _locate(target, alias.name)
    raise AssertionError(f"{module} exports {name} but does not bind it")


def _public(module: str) -> bool:
    return not module.rsplit(".", 1)[-1].startswith("_")


def _key(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Key:
    """A function as the reference must spell it: async or not, name, parameters with
    their annotations and defaults, return annotation, decorators."""
    returns = ast.unparse(fn.returns) if fn.returns else None
    decorators = tuple(ast.unparse(d) for d in fn.decorator_list)
    return (type(fn).__name__, fn.name, ast.unparse(fn.args), returns, decorators)


def _shown(key: Key) -> str:
    kind, fn, args, returns, decorators = key
    head = "".join(f"@{d} " for d in decorators) + ("async " if kind.startswith("Async") else "")
    return f"{head}def {fn}({args})" + (f" -> {returns}" if returns else "")


def _reference() -> dict[str, ast.Module]:
    """docs/reference.md: each `## `catbird_db.x`` section's pyi blocks, parsed together."""
    sections: dict[str, list[str]] = {}
    marks = docblocks.headings(REFERENCE)
    for block in docblocks.blocks(REFERENCE, "pyi"):
        owners = [text for line, text in marks if line < block.line]
        assert owners, f"{block.where}: a pyi block before any module heading"
        module = owners[-1].strip("`")
        assert module in PUBLIC_MODULES, f"{block.where}: {module} is not a public module"
        try:
            ast.parse(block.text)
        except SyntaxError as exc:
            raise AssertionError(f"{block.where}: does not parse: {exc}") from None
        sections.setdefault(module, []).append(block.text)
    return {module: ast.parse("\n".join(texts)) for module, texts in sections.items()}


def _bindings(tree: ast.Module) -> dict[str, ast.stmt]:
    found: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            found.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, ast.ImportFrom):
            found.update((a.asname or a.name, node) for a in node.names)
    return found


def _members(module: str, cls: ast.ClassDef) -> dict[str, ast.stmt]:
    """A class's documented members: its public methods and properties (and `__init__`),
    its fields, and those it takes from a private base of the package."""
    found: dict[str, ast.stmt] = {}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id.startswith("_"):
            located = _locate(module, base.id)
            if isinstance(located, tuple) and isinstance(located[1], ast.ClassDef):
                found.update(_members(located[0], located[1]))
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_") or node.name == "__init__":
                found[node.name] = node
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and not node.target.id.startswith("_")
        ):
            found[node.target.id] = node
    return found


def _stub_members(cls: ast.ClassDef) -> dict[str, ast.stmt]:
    found: dict[str, ast.stmt] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
    return found


def _value(node: ast.stmt) -> str | None:
    value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
    return ast.unparse(value) if value is not None else None


def _compare(where: str, module: str, stub: ast.stmt, code: ast.stmt) -> Iterator[str]:
    """How a stub differs from the definition it documents."""
    if isinstance(code, ast.FunctionDef | ast.AsyncFunctionDef):
        if not isinstance(stub, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{where}: is a function in the code"
        elif _key(stub) != _key(code):
            yield f"{where}: the code has `{_shown(_key(code))}`, the docs `{_shown(_key(stub))}`"
    elif isinstance(code, ast.ClassDef):
        if not isinstance(stub, ast.ClassDef):
            yield f"{where}: is a class in the code"
            return
        bases = [ast.unparse(b) for b in code.bases if not ast.unparse(b).startswith("_")]
        if [ast.unparse(b) for b in stub.bases] != bases:
            yield f"{where}: the code's bases are ({', '.join(bases)})"
        mine, theirs = _stub_members(stub), _members(module, code)
        for name in sorted(theirs.keys() - mine.keys()):
            yield f"{where}.{name}: missing from the docs"
        for name in sorted(mine.keys() - theirs.keys()):
            yield f"{where}.{name}: in the docs, not in the code"
        for name in sorted(mine.keys() & theirs.keys()):
            yield from _compare(f"{where}.{name}", module, mine[name], theirs[name])
    elif isinstance(code, ast.AnnAssign) and isinstance(stub, ast.AnnAssign):
        if ast.unparse(stub.annotation) != ast.unparse(code.annotation):
            yield f"{where}: the code annotates it `{ast.unparse(code.annotation)}`"
        if stub.value is not None and _value(stub) != _value(code):
            yield f"{where}: the code has `= {_value(code)}`"
    elif isinstance(stub, ast.Assign | ast.AnnAssign):
        if _value(stub) is not None and _value(stub) != _value(code):
            yield f"{where}: the code has `= {_value(code)}`"
    else:
        yield f"{where}: is a value in the code"


def _exports() -> dict[str, list[str]]:
    return {m: list(importlib.import_module(m).__all__) for m in PUBLIC_MODULES if _has_all(m)}


def _has_all(module: str) -> bool:
    return hasattr(importlib.import_module(module), "__all__")


def _homes() -> dict[tuple[str, str], tuple[str, str, ast.stmt]]:
    """Each public name's full entry: (the section that holds it, its defining module,
    its node). A name defined in a public module is documented in that module's
    section; one defined in a private module in the first public module exporting it."""
    homes: dict[tuple[str, str], tuple[str, str, ast.stmt]] = {}
    exports = _exports()
    for module in sorted(exports, key=lambda m: (m == PACKAGE, m)):
        for name in exports[module]:
            located = _locate(module, name)
            if not isinstance(located, tuple):
                continue
            defined, node = located
            home = defined if _public(defined) else module
            homes.setdefault((defined, name), (home, defined, node))
    return homes


def test_the_reference_has_a_section_for_every_public_module() -> None:
    sections = _reference()
    missing = [m for m in PUBLIC_MODULES if m not in sections]
    _fail([f"docs/reference.md: no `## `{m}`` section with a pyi block" for m in missing])


def test_the_reference_documents_every_public_name_as_the_code_spells_it() -> None:
    """Every name in `__all__` of a public module (and every class the package exports):
    a function by its def line, a class with its bases, fields, properties and public
    methods, a constant by name (and value, if given); a re-exported name by an import
    from the section that documents it."""
    sections = _reference()
    homes = _homes()
    problems: list[str] = []
    documented: dict[str, dict[str, ast.stmt]] = {m: _bindings(t) for m, t in sections.items()}
    for (_, name), (home, defined, node) in sorted(homes.items()):
        stub = documented.get(home, {}).get(name)
        where = f"docs/reference.md: {home}.{name}"
        if stub is None or isinstance(stub, ast.ImportFrom):
            problems.append(f"{where}: not documented (define it in the `{home}` section)")
            continue
        problems.extend(_compare(where, defined, stub, node))
    for module, names in _exports().items():
        for name in names:
            located = _locate(module, name)
            if isinstance(located, tuple) and homes[(located[0], name)][0] == module:
                continue
            stub = documented.get(module, {}).get(name)
            where = f"docs/reference.md: {module}.{name}"
            if located is _MODULE:
                wanted = PACKAGE
            elif isinstance(located, tuple):
                wanted = homes[(located[0], name)][0]
            else:
                wanted = None  # from outside the package: any import
            if not isinstance(stub, ast.ImportFrom):
                problems.append(f"{where}: re-exported; say so: `from {wanted} import {name}`")
            elif wanted is not None and stub.module != wanted:
                problems.append(f"{where}: import it from {wanted}, not {stub.module}")
    _fail(problems)


def test_the_reference_documents_nothing_the_code_lacks() -> None:
    """A stub of a function that was renamed or removed fails here, even if the name is
    in no `__all__`."""
    problems: list[str] = []
    homes = {(home, name) for (_, name), (home, _, _) in _homes().items()}
    for module, tree in _reference().items():
        for name, stub in _bindings(tree).items():
            if isinstance(stub, ast.ImportFrom) or (module, name) in homes:
                continue
            where = f"docs/reference.md: {module}.{name}"
            located = _locate_or_none(module, name)
            if not isinstance(located, tuple):
                problems.append(f"{where}: no such name in {module}")
            else:
                problems.extend(_compare(where, located[0], stub, located[1]))
    _fail(problems)


def _locate_or_none(module: str, name: str) -> tuple[str, ast.stmt] | object | None:
    try:
        return _locate(module, name)
    except AssertionError:
        return None


# -- calls and signatures written in the prose -----------------------------------------

_CALL = re.compile(
    r"^(?:await )?(?P<qual>(?:[A-Za-z_]\w*\.)*)(?P<name>[A-Za-z_]\w*)"
    r"\((?P<args>.*)\)(?:\s*->\s*(?P<ret>.+))?$"
)
_METHOD_OWNERS: dict[str, type[Any]] = {
    "db.": Database,
    "Database.": Database,
    "tx.": Transaction,
    "sp.": Transaction,
    "DbConfig.": DbConfig,
}


def _callable_for(qual: str, name: str) -> Callable[..., Any] | None:
    """The public function or method a span names, if it names one."""
    if qual in _METHOD_OWNERS:
        owner = _METHOD_OWNERS[qual]
        found = getattr(owner, name, None)
        return found if callable(found) and not name.startswith("_") else None
    if qual:
        module = f"{PACKAGE}.{qual.rstrip('.')}"
        if module not in PUBLIC_MODULES or not _has_all(module):
            return None
        mod: ModuleType = importlib.import_module(module)
        found = getattr(mod, name, None) if name in mod.__all__ else None
        return found if inspect.isfunction(found) else None
    owners = [
        getattr(importlib.import_module(f"{PACKAGE}.{m}"), name)
        for m in ENTITY_MODULES
        if name in importlib.import_module(f"{PACKAGE}.{m}").__all__
    ]
    return owners[0] if len(owners) == 1 and inspect.isfunction(owners[0]) else None


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if params and params[0].name in ("self", "cls"):
        signature = signature.replace(parameters=params[1:])
    return signature


def _annotation(text: str) -> str:
    return ast.unparse(ast.parse(text, mode="eval"))


def _check_call(span: docblocks.Span, fn: Callable[..., Any], args: str) -> Iterator[str]:
    signature = _signature(fn)
    params = signature.parameters
    written = re.sub(r"(\w+)=(?=\s*[,)]|\s*$)", r"\1=_", args)
    as_def = None
    with contextlib.suppress(SyntaxError):
        as_def = ast.parse(f"def f({args}): pass").body[0]
    if isinstance(as_def, ast.FunctionDef) and _is_signature(as_def.args):
        yield from _check_signature(span, signature, as_def.args)
        return
    try:
        call = ast.parse(f"f({written})", mode="eval").body
    except SyntaxError:
        yield f"{span.where}: `{span.text}`: neither a call nor a signature in Python syntax"
        return
    assert isinstance(call, ast.Call)
    for keyword in call.keywords:
        if keyword.arg is not None and keyword.arg not in params:
            yield f"{span.where}: `{span.text}`: no parameter {keyword.arg}: {signature}"
    if any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in call.args):
        return  # `f(..., key=)`: only the keywords are meant
    if any(isinstance(a, ast.Starred) for a in call.args):
        return
    try:
        bound = signature.bind_partial(
            *call.args, **{k.arg: k.value for k in call.keywords if k.arg is not None}
        )
    except TypeError as exc:
        yield f"{span.where}: `{span.text}`: {exc}: the code has {signature}"
        return
    for param, value in bound.arguments.items():
        if isinstance(value, ast.Name) and value.id in params and value.id != param:
            yield f"{span.where}: `{span.text}`: {value.id} lands on {param}: {signature}"


def _is_signature(args: ast.arguments) -> bool:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    return bool(args.kwonlyargs or args.vararg or any(a.annotation for a in every))


def _check_signature(
    span: docblocks.Span, signature: inspect.Signature, args: ast.arguments
) -> Iterator[str]:
    written: list[tuple[str, str]] = []
    for arg in args.args:
        written.append((arg.arg, "positional"))
    if args.vararg:
        written.append((args.vararg.arg, "*"))
    written.extend((arg.arg, "keyword") for arg in args.kwonlyargs)
    if args.kwarg:
        written.append((args.kwarg.arg, "**"))
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.VAR_POSITIONAL: "*",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
        inspect.Parameter.VAR_KEYWORD: "**",
    }
    actual = [(p.name, kinds[p.kind]) for p in signature.parameters.values()]
    if written != actual:
        yield f"{span.where}: `{span.text}`: the code has {signature}"
        return
    defaults = dict(zip([a.arg for a in args.args][::-1], args.defaults[::-1], strict=False))
    defaults.update((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d)
    for name, node in defaults.items():
        real = signature.parameters[name].default
        try:
            value = ast.literal_eval(node)
        except ValueError:
            continue
        if real is inspect.Parameter.empty or value != real:
            yield f"{span.where}: `{span.text}`: {name} defaults to {real!r} in the code"


def _prose_calls() -> Iterator[tuple[docblocks.Span, Callable[..., Any], str, str | None]]:
    for page in PAGES:
        for span in docblocks.spans(page):
            match = _CALL.match(span.text)
            if match is None:
                continue
            fn = _callable_for(match["qual"], match["name"])
            if fn is not None:
                yield span, fn, match["args"], match["ret"]


def test_the_prose_finds_calls_to_hold() -> None:
    """The check below is not vacuous: the pages name public functions with arguments."""
    assert sum(1 for _ in _prose_calls()) >= 20


def test_every_call_or_signature_in_the_prose_fits_the_code() -> None:
    """A span like `messages.list_messages(db, convo, actor_did=, after_seq=)` binds to the
    function's parameters (a bare `key=` is a keyword given, `...` stands for the rest,
    an argument spelled as a parameter's name lands on that parameter); one written as a
    signature (`f(conn, *, actor_did)`) lists the parameters as the code has them, with
    the code's defaults; `-> T` is the code's return annotation."""
    problems: list[str] = []
    for span, fn, args, ret in _prose_calls():
        problems.extend(_check_call(span, fn, args))
        if ret is not None:
            real = _signature(fn).return_annotation
            if not isinstance(real, str) or _annotation(ret) != _annotation(real):
                problems.append(f"{span.where}: `{span.text}`: the code returns {real}")
    _fail(problems)


# -- DbConfig --------------------------------------------------------------------------

_UNITS = {
    "s": 1,
    "ms": 1,
    "day": 86400,
    "days": 86400,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


def _default(text: str) -> object:
    """A default as the usage table writes it: `None`, `False`, `'text'`, 5 s, 64 KiB."""
    text = text.strip()
    if text.startswith("`") and text.endswith("`"):
        inner = text.strip("`")
        try:
            return ast.literal_eval(inner)
        except (ValueError, SyntaxError):
            return inner
    number = re.fullmatch(r"(\d+(?:\.\d+)?)(?: (\w+))?", text)
    if number is None:
        return text
    value = float(number[1]) * _UNITS[number[2]] if number[2] else float(number[1])
    return value


def _config_table() -> list[tuple[int, list[str], list[str]]]:
    lines = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8").splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| DbConfig field |"))
    rows = []
    for i in range(head + 2, len(lines)):
        if not lines[i].startswith("|"):
            break
        cells = [c.strip() for c in lines[i].strip("|").split("|")]
        rows.append((i + 1, re.findall(r"`(\w+)`", cells[0]), _split_defaults(cells[1])))
    return rows


def _split_defaults(cell: str) -> list[str]:
    return [part for part in re.split(r",\s+(?=(?:[^`]*`[^`]*`)*[^`]*$)", cell) if part]


def test_every_config_field_is_in_the_usage_table_with_its_default() -> None:
    """docs/usage.md's `| DbConfig field | default | meaning |` table: every field once,
    no other name, and the default in the second column (one value, or one per field
    in the order named) equal to the code's; `random per process` is the cursor
    secret's."""
    fields = {f.name: f for f in dataclasses.fields(DbConfig)}
    problems: list[str] = []
    seen: list[str] = []
    for line, names, defaults in _config_table():
        where = f"docs/usage.md:{line}"
        if len(defaults) not in (1, len(names)):
            problems.append(f"{where}: {len(names)} fields, {len(defaults)} defaults")
            continue
        for name, text in zip(names, defaults * len(names), strict=False):
            seen.append(name)
            field = fields.get(name)
            if field is None:
                problems.append(f"{where}: {name} is not a DbConfig field")
                continue
            if field.default is dataclasses.MISSING:
                if text != "random per process":
                    problems.append(f"{where}: {name} has a default factory, not {text!r}")
                continue
            wanted, written = field.default, _default(text)
            if isinstance(wanted, int | float) and not isinstance(wanted, bool):
                same = isinstance(written, float) and abs(written - wanted) < 1e-9
            else:
                same = written == wanted
            if not same:
                problems.append(f"{where}: {name} defaults to {wanted!r}, the table says {text}")
    problems += [
        f"docs/usage.md: {n} is not in the DbConfig table" for n in fields if n not in seen
    ]
    problems += [
        f"docs/usage.md: {n} is in the table twice" for n in set(seen) if seen.count(n) > 1
    ]
    _fail(problems)


def test_every_config_name_the_docs_use_is_a_field() -> None:
    """`DbConfig.x` and `CATBIRD_DB_X` anywhere in the docs name a real field."""
    fields = {f.name for f in dataclasses.fields(DbConfig)}
    problems: list[str] = []
    for page in PAGES:
        for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            for name in re.findall(r"\bDbConfig\.([a-z_]+)\b", line):
                if name not in fields and not hasattr(DbConfig, name):
                    problems.append(f"{docblocks.name(page)}:{i}: DbConfig.{name}")
            for name in re.findall(r"\bCATBIRD_DB_([A-Z_]+)\b", line):
                if name.lower() not in fields:
                    problems.append(f"{docblocks.name(page)}:{i}: CATBIRD_DB_{name}")
    _fail(problems)


# -- the command line ------------------------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(sub: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in sub._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


def cli_lines() -> list[tuple[str, list[str]]]:
    """Every `catbird-db ...` the docs write: in sh and console blocks, and as code spans
    (`catbird-db grant ROLE`); a `...` that stands for more arguments is dropped."""
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        for block in docblocks.blocks(page, "sh", "console"):
            for command in docblocks.commands(block):
                if command.program == "catbird-db":
                    found.append((command.where, list(command.argv[1:])))
        for span in docblocks.spans(page):
            # `catbird-db grant` alone names the command; with arguments it is a command line.
            if re.match(r"catbird-db [a-z-]+ ", span.text):
                found.append((span.where, span.text.split()[1:]))
    return [(where, [a for a in argv if a != "..."]) for where, argv in found]


def test_every_catbird_db_command_line_in_the_docs_parses() -> None:
    """Each is read by the command's own parser: an unknown command or option, or a
    value of the wrong kind, fails here."""
    problems: list[str] = []
    for where, argv in cli_lines():
        if "--help" in argv or "-h" in argv or "--version" in argv:
            continue
        try:
            cli.build_parser().parse_args(argv)
        except cli.UsageError as exc:
            problems.append(f"{where}: catbird-db {' '.join(argv)}: {exc}")
    _fail(problems)


def test_every_command_and_option_of_catbird_db_is_in_the_docs() -> None:
    """Each subcommand in a `catbird-db SUB ...` line, and each of its options in one; an
    option several subcommands share (`--database-url`) in a line of any of them."""
    lines = cli_lines()
    subcommands = _subcommands()
    owners: dict[str, list[str]] = {}
    for name, sub in subcommands.items():
        for option in _options(sub):
            owners.setdefault(option, []).append(name)
    problems: list[str] = []
    for name, sub in subcommands.items():
        if not any(argv and argv[0] == name for _, argv in lines):
            problems.append(f"catbird-db {name}: in no docs page")
        for option in _options(sub):
            shown_with = {name} if len(owners[option]) == 1 else set(owners[option])
            if not any(
                argv and argv[0] in shown_with and option in (a.split("=", 1)[0] for a in argv)
                for _, argv in lines
            ):
                problems.append(f"catbird-db {name} {option}: in no `catbird-db {name}` line")
    _fail(problems)


# -- make ------------------------------------------------------------------------------


def _makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))
    variables = set(re.findall(r"\$\(([A-Z_]+)\)", text))
    return targets, variables


def make_lines() -> list[tuple[str, list[str]]]:
    """Every `make ...` in sh blocks and code spans."""
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        for block in docblocks.blocks(page, "sh", "console"):
            for command in docblocks.commands(block):
                if command.program == "make":
                    found.append((command.where, list(command.argv[1:])))
        for span in docblocks.spans(page):
            if re.fullmatch(r"make [a-z][\w -]*(?: [A-Z_]+=\S*)*", span.text):
                found.append((span.where, span.text.split()[1:]))
    return found


def test_every_make_target_and_variable_the_docs_name_is_in_the_makefile() -> None:
    targets, variables = _makefile()
    problems: list[str] = []
    for where, argv in make_lines():
        for arg in argv:
            name, is_variable, _ = arg.partition("=")
            if is_variable and name not in variables:
                problems.append(f"{where}: make {arg}: the Makefile reads no {name}")
            elif not is_variable and name not in targets:
                problems.append(f"{where}: make {arg}: no such target")
    assert make_lines(), "no make command found: the check would be vacuous"
    _fail(problems)


# -- what the docs point at exists -----------------------------------------------------

_LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def test_every_link_leads_to_a_file_and_heading_of_the_repository() -> None:
    problems: list[str] = []
    for page in PAGES:
        for i, line in enumerate(docblocks.prose(page), start=1):
            for target in _LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, fragment = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                where = f"{docblocks.name(page)}:{i}: {target}"
                if not file.is_relative_to(ROOT) or not file.exists():
                    problems.append(f"{where}: no such file in the repository")
                elif fragment and fragment not in {
                    docblocks.anchor(text) for _, text in docblocks.headings(file)
                }:
                    problems.append(f"{where}: no heading with that anchor")
    _fail(problems)


_TOP = ("catbird_db", "sql", "migrations", "tests", "docs", "examples", "bench")


def test_every_path_the_docs_name_exists() -> None:
    """A span like `sql/members.sql`, `catbird_db/tools/*.py` or `migrations/0006` names
    what is there (a glob matches, a prefix begins a name); `<entity>` is a pattern."""
    problems: list[str] = []
    for page in PAGES:
        for span in docblocks.spans(page):
            text = span.text.split("::")[0]
            if not re.fullmatch(r"[\w.*/-]+", text) or "<" in text:
                continue
            first = text.split("/")[0]
            if first not in _TOP and not re.search(r"\.(py|sql|md|toml)$", text):
                continue
            if "/" not in text and first not in _TOP:
                continue
            if not (ROOT.glob(text) if "*" in text else (ROOT / text).exists()) and not any(
                ROOT.glob(text + "*")
            ):
                problems.append(f"{span.where}: {span.text}: no such file")
            elif "*" in text and not any(ROOT.glob(text)):
                problems.append(f"{span.where}: {span.text}: matches nothing")
    _fail(problems)


def _test_names() -> dict[str, set[str]]:
    return {
        path.name: set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))
        for path in (ROOT / "tests").glob("test_*.py")
    }


def test_every_test_the_docs_cite_exists() -> None:
    """`test_x.py`, `test_x.py::test_name*` and a bare `test_name*` (in any test file)."""
    names = _test_names()
    every = set().union(*names.values())
    problems: list[str] = []
    for page in PAGES:
        for span in docblocks.spans(page):
            text = span.text.removeprefix("tests/")
            file, _, test = text.partition("::")
            if re.fullmatch(r"test_\w+\.py", file):
                if file not in names:
                    problems.append(f"{span.where}: {span.text}: no such test file")
                elif test and not fnmatch.filter(names[file], test):
                    problems.append(f"{span.where}: {span.text}: no such test in {file}")
            elif re.fullmatch(r"test_[\w*]+", text) and not fnmatch.filter(every, text):
                problems.append(f"{span.where}: {span.text}: no such test")
    _fail(problems)


# -- nothing outside the repository ----------------------------------------------------

# Spelled in pieces so that this file does not match itself.
_CITATIONS = re.compile(
    "|".join(
        (
            r"\b" + "DES" + r"IGN\b",
            r"(?i:\boriginal (?:layer|design|spec|summary|brief)\b)",
            r"(?i:\b(?:design|summary) doc(?:ument)?\b)",
        )
    )
)
_SCANNED = ("README.md", "Makefile", "pyproject.toml", *_TOP)


def _scanned_files() -> Iterator[Path]:
    for top in _SCANNED:
        path = ROOT / top
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in candidates:
            wanted = file.suffix in (".py", ".md", ".sql", ".toml", "") and file.is_file()
            if wanted and "__pycache__" not in file.parts:
                yield file


def test_the_repository_cites_no_document_a_reader_does_not_have() -> None:
    """The guarantees are stated in docs/, in the project's words: no page, comment or
    test cites a document, or an earlier version of the layer, the repository does not
    hold."""
    problems = [
        f"{file.relative_to(ROOT)}:{i}: {line.strip()}"
        for file in _scanned_files()
        for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1)
        if _CITATIONS.search(line)
    ]
    _fail(problems)
