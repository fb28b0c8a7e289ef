"""Where each named statement is bound, and the one function that runs it.

A module binds each statement it runs once, at module level, and the binding says what
the statement gives back (catbird_db/sql.py): `_GET = query("get_message", Message)`,
`scalar("name", int)`, `command("name")`, or `statement("name")` for a bare psycopg
call. This imports the modules and reads those bindings; from each module's own source
it reads only where each binding is used, by the conventions:

- one function refers to it, as the first argument of the call that runs it:
  `conn.fetch_one(_GET, params)` (fetch_all, fetch_value, execute, execute_in_batches),
  or, on a psycopg connection or cursor, `execute(_X.text, params)` (executemany, copy,
  stream) or `execute(_X.compose(grantee=role))` for a statement with identifier slots;
- `params` is a dict literal with literal string keys, or a local variable assigned one
  once in that function (for executemany, a comprehension of one).

`catbird-db check` compares what this finds with what the server says of each
statement; tests/test_registry_usage.py holds each registry to it (no dead SQL, no
missing SQL, one function per statement): the runtime SQL to the library's modules, the
tools' SQL to the tools.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import importlib
import importlib.util
import re
import sys
import traceback
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from ..sql import Command, Query, Scalar, Statement

__all__ = [
    "PACKAGE_DIR",
    "TOOLS_DIR",
    "Binding",
    "Field",
    "Model",
    "Problem",
    "Usage",
    "Use",
    "analyse",
    "package_modules",
]

# The library's modules run the statements of sql/; the tools' those of sql/tools/.
TOOLS_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TOOLS_DIR.parent
Binding = Query[Any] | Scalar[Any] | Command | Statement
_BINDINGS = (Query, Scalar, Command, Statement)
_BINDERS = frozenset({"query", "scalar", "command", "statement"})
_HELPERS = frozenset({"fetch_one", "fetch_all", "fetch_value", "execute", "execute_in_batches"})
# psycopg connection and cursor methods that may take a statement's `.text`.
_RAW_METHODS = frozenset({"execute", "executemany", "copy", "stream"})
_HOW = (
    "run it as the first argument of conn.fetch_one/fetch_all/fetch_value/execute, "
    "or pass _X.text (or _X.compose(...)) to a psycopg execute, executemany, copy or stream"
)
_PARAMS_RULE = "params must be a dict literal with literal string keys, or a variable assigned one"


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One finding: where, about which statement (may be empty), and what is wrong."""

    path: Path
    line: int
    statement: str
    message: str

    def __str__(self) -> str:
        where = f"{_shown(self.path)}:{self.line}"
        return (
            f"{where}: {self.statement}: {self.message}"
            if self.statement
            else f"{where}: {self.message}"
        )


@dataclass(frozen=True, slots=True)
class Field:
    """A dataclass field: the Python types its annotation admits, and whether None is one."""

    name: str
    types: frozenset[str]
    optional: bool
    annotation: str


@dataclass(frozen=True, slots=True)
class Model:
    """A dataclass that rows are built into, positionally."""

    name: str
    fields: tuple[Field, ...]

    @classmethod
    def of(cls, model: type[Any]) -> Model:
        """The fields of the dataclass `model`, read through its resolved type hints."""
        hints = typing.get_type_hints(model)
        found = []
        for field in dataclasses.fields(model):
            types, optional = admits(hints[field.name])
            found.append(Field(field.name, types, optional, _written(model, field.name)))
        return cls(model.__name__, tuple(found))


@dataclass(frozen=True, slots=True)
class Use:
    """The call that runs a binding. `params` is None when it could not be read."""

    statement: str
    path: Path
    line: int
    function: str
    helper: str  # fetch_one, fetch_all, fetch_value, execute, or text (a psycopg call)
    params: frozenset[str] | None
    binding: Binding

    @property
    def model(self) -> Model | None:
        """The dataclass a Query fills; None for any other binding."""
        return Model.of(self.binding.model) if isinstance(self.binding, Query) else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Every use found, and every departure from the conventions."""

    uses: tuple[Use, ...]
    problems: tuple[Problem, ...]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def package_modules(directory: Path = PACKAGE_DIR) -> list[Path]:
    """Every module of `directory` (default: the library, catbird_db/ without its
    subpackages) that binds a named statement, in name order."""
    paths = sorted(p for p in directory.glob("*.py") if p.name != "__main__.py")
    return [p for p in paths if _bindings(_load(p.resolve()))]


def analyse(statements: Mapping[str, Statement], modules: Iterable[Path]) -> Usage:
    """Import `modules` and read their bindings of `statements` and the function that
    runs each; report what breaks the conventions."""
    uses: list[Use] = []
    problems: list[Problem] = []
    bound: dict[str, tuple[Path, int]] = {}
    for path in (p.resolve() for p in modules):
        try:
            module = _load(path)
        except Exception as exc:  # a module that does not import is a finding
            problems.append(Problem(path, _failing_line(exc, path), "", f"does not import: {exc}"))
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        assigned = _assigned(tree)
        problems += _stray_bindings(path, tree)
        scan = _Scan(path, tree)
        for variable, binding in _bindings(module).items():
            name = _statement(binding).name
            line = assigned.get(variable)
            if line is None:
                problems.append(
                    Problem(path, 1, name, f"{variable} is imported: bind it where it is run")
                )
                continue
            if name not in statements:
                problems.append(Problem(path, line, name, "no statement of that name in the SQL"))
            if name in bound:
                first = bound[name]
                problems.append(
                    Problem(
                        path, line, name, f"bound again (first at {_shown(first[0])}:{first[1]})"
                    )
                )
            bound.setdefault(name, (path, line))
            found, more = scan.uses(variable, binding, line)
            uses += found
            problems += more
    unknown = any(p.message.startswith("does not import") for p in problems)
    for name, stmt in statements.items():
        if name not in bound and not unknown:  # else it may be the unimported one's
            problems.append(
                Problem(stmt.path, stmt.line, name, "no module binds this statement (dead SQL)")
            )
    return Usage(tuple(uses), tuple(sorted(problems)))


def _load(path: Path) -> types.ModuleType:
    """The module at `path`: by its name if it is the library's, else executed afresh."""
    if path.is_relative_to(PACKAGE_DIR):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        dotted = ".".join((PACKAGE_DIR.name, *parts))
        return importlib.import_module(dotted.removesuffix(".__init__"))
    name = "_catbird_usage_" + re.sub(r"\W", "_", str(path))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python module: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and get_type_hints look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _failing_line(exc: BaseException, path: Path) -> int:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return (lines[-1] or 1) if lines else 1


def _bindings(module: types.ModuleType) -> dict[str, Binding]:
    return {k: v for k, v in vars(module).items() if isinstance(v, _BINDINGS)}


def _statement(binding: Binding) -> Statement:
    return binding if isinstance(binding, Statement) else binding.statement


def _assigned(tree: ast.Module) -> dict[str, int]:
    """Module-level `NAME = ...`: name -> line."""
    found: dict[str, int] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        found.update((t.id, node.lineno) for t in targets if isinstance(t, ast.Name))
    return found


def _stray_bindings(path: Path, tree: ast.Module) -> list[Problem]:
    """A binding made anywhere but as the value of a module-level assignment."""
    at_top = {id(node.value) for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)}
    return [
        Problem(path, node.lineno, "", 'bind statements at module level: _X = query("name", Row)')
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and id(node) not in at_top
        and getattr(node.func, "id", getattr(node.func, "attr", None)) in _BINDERS
        and node.args[:1]
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]


class _Scan:
    """One module's source: which function each name is used in, and by which call."""

    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.path = path
        self.parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        self.owners: dict[ast.AST, tuple[str, ast.AST | None]] = {}
        self._visit(tree, "", ("", None))

    def _visit(self, node: ast.AST, prefix: str, current: tuple[str, ast.AST | None]) -> None:
        for child in ast.iter_child_nodes(node):
            self.owners[child] = current
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                self._visit(child, f"{name}.", (name, child))
            elif isinstance(child, ast.ClassDef):
                self._visit(child, f"{prefix}{child.name}.", current)
            else:
                self._visit(child, prefix, current)

    def uses(self, variable: str, binding: Binding, line: int) -> tuple[list[Use], list[Problem]]:
        name = _statement(binding).name
        uses: list[Use] = []
        problems: list[Problem] = []
        functions: set[str] = set()
        for node, (function, function_node) in self.owners.items():
            if not (isinstance(node, ast.Name) and node.id == variable):
                continue
            if not isinstance(node.ctx, ast.Load):
                continue
            if function_node is None:
                problems.append(Problem(self.path, node.lineno, name, "used outside a function"))
                continue
            functions.add(function)
            how = self._call_of(node)
            if how is None:
                problems.append(
                    Problem(self.path, node.lineno, name, f"cannot follow this use: {_HOW}")
                )
                continue
            helper, call = how
            params, why = _params(helper, call, function_node)
            if why:
                problems.append(Problem(self.path, call.lineno, name, why))
            uses.append(Use(name, self.path, call.lineno, function, helper, params, binding))
        if not functions:
            problems.append(Problem(self.path, line, name, f"{variable} is bound but never run"))
        elif len(functions) > 1:
            problems.append(
                Problem(
                    self.path,
                    line,
                    name,
                    f"run by {len(functions)} functions ({', '.join(sorted(functions))}); "
                    "each statement belongs to exactly one",
                )
            )
        return uses, problems

    def _call_of(self, node: ast.Name) -> tuple[str, ast.Call] | None:
        parent = self.parents.get(node)
        if isinstance(parent, ast.Attribute) and parent.attr in ("text", "compose"):
            passed: ast.AST = parent  # _X.text, or the call _X.compose(...)
            if parent.attr == "compose":
                composed = self.parents.get(parent)
                if not (isinstance(composed, ast.Call) and composed.func is parent):
                    return None
                passed = composed
            call = self.parents.get(passed)
            if _first_argument_of(call, passed, _RAW_METHODS):
                assert isinstance(call, ast.Call)
                return "text", call
            return None
        if _first_argument_of(parent, node, _HELPERS):
            assert isinstance(parent, ast.Call)
            return getattr(parent.func, "attr", ""), parent
        return None


def _first_argument_of(call: ast.AST | None, node: ast.AST, methods: frozenset[str]) -> bool:
    return (
        isinstance(call, ast.Call)
        and call.args[:1] == [node]
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in methods
    )


def _params(
    helper: str, call: ast.Call, function: ast.AST
) -> tuple[frozenset[str] | None, str | None]:
    many = helper == "text" and getattr(call.func, "attr", "") == "executemany"
    keyword = "params_seq" if many else "params"
    expr = call.args[1] if len(call.args) > 1 else None
    expr = next((k.value for k in call.keywords if k.arg == keyword), expr)
    if many and isinstance(expr, ast.ListComp | ast.GeneratorExp):
        expr = expr.elt  # one dict literal per row
    if expr is None and helper == "text":
        return frozenset(), None
    if isinstance(expr, ast.Name):
        values: list[ast.expr | None] = []
        for node in ast.walk(function):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(getattr(t, "id", "") == expr.id for t in targets):
                values.append(getattr(node, "value", None))
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store | ast.Del)
                and getattr(node.value, "id", "") == expr.id
            ):
                return None, f"params {expr.id!r} is changed after it is built; {_PARAMS_RULE}"
        if len(values) != 1:
            why = f"params {expr.id!r} is not assigned a dict literal exactly once; {_PARAMS_RULE}"
            return None, why
        expr = values[0]
    if isinstance(expr, ast.Dict):
        keys = [k.value if isinstance(k, ast.Constant) else None for k in expr.keys]
        if all(isinstance(k, str) for k in keys):
            return frozenset(str(k) for k in keys), None
    return None, _PARAMS_RULE


def admits(hint: Any) -> tuple[frozenset[str], bool]:
    """The Python type names a resolved type hint admits, and whether it admits None."""
    if hint is None or hint is type(None):
        return frozenset(), True
    if hint is Any:
        return frozenset({"Any"}), False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        names = {type(a).__name__ for a in args}
        return frozenset(names - {"NoneType"}), "NoneType" in names
    if origin is Union or origin is types.UnionType:
        found: frozenset[str] = frozenset()
        optional = False
        for arg in args:
            more, more_optional = admits(arg)
            found, optional = found | more, optional or more_optional
        return found, optional
    if origin in (list, collections.abc.Sequence) and args:
        inner, _ = admits(args[0])
        return frozenset(f"list[{t}]" for t in inner), False
    if hasattr(hint, "__supertype__"):  # a NewType
        return admits(hint.__supertype__)
    return frozenset({getattr(origin or hint, "__name__", str(hint))}), False


def _written(model: type[Any], name: str) -> str:
    """A field's annotation as its class wrote it."""
    for cls in model.__mro__:
        annotation = vars(cls).get("__annotations__", {}).get(name)
        if annotation is not None:
            return (
                annotation
                if isinstance(annotation, str)
                else getattr(annotation, "__name__", str(annotation))
            )
    return "?"
