"""Where each named statement is bound and run, read from the source without importing it.

The conventions this reads (and reports any departure from):

- a module binds a statement at module level: `_GET = statement("get_message")`;
- one function runs it, as the first argument of an Executor helper,
  `conn.fetch_one(_GET, params, Model)`, `conn.fetch_all(...)`,
  `conn.fetch_value(_GET, params)`, `conn.execute(_GET, params)`, or on a bare psycopg
  connection or cursor `execute(_GET.text, params)` (or executemany, copy, stream), or
  for a statement with identifier slots `execute(_GRANT.compose(grantee=role))`;
- `params` is a dict literal with literal string keys, or a local variable assigned one
  once in that function (for executemany, a comprehension of one);
- `Model` is a dataclass, found by following the module's imports.

`catbird-db check` compares what this finds with what the server says of each
statement; tests/test_registry_usage.py holds each registry to it (no dead SQL, no
missing SQL, one function per statement): the runtime SQL to the library's modules, the
tools' SQL to the tools.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..sql import Statement

__all__ = [
    "PACKAGE_DIR",
    "TOOLS_DIR",
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
_HELPERS = frozenset({"fetch_one", "fetch_all", "fetch_value", "execute", "execute_in_batches"})
ROW_HELPERS = frozenset({"fetch_one", "fetch_all"})
# psycopg connection and cursor methods that may take a statement's `.text`.
_RAW_METHODS = frozenset({"execute", "executemany", "copy", "stream"})
_HOW = (
    "run it as the first argument of conn.fetch_one/fetch_all/fetch_value/execute, "
    "or pass _X.text (or _X.compose(...)) to a psycopg execute, executemany, copy or stream"
)


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


@dataclass(frozen=True, slots=True)
class Use:
    """One call that runs a statement. `params` is None when it could not be read."""

    statement: str
    path: Path
    line: int
    function: str
    helper: str  # fetch_one, fetch_all, fetch_value, execute, or text (a psycopg execute)
    params: frozenset[str] | None
    model: Model | None


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
    return [p for p in sorted(directory.glob("*.py")) if _bindings(_Module(p))]


def analyse(statements: Mapping[str, Statement], modules: Iterable[Path]) -> Usage:
    """Read `modules` for the uses of `statements`; report what breaks the conventions."""
    resolver = _Resolver()
    uses: list[Use] = []
    problems: list[Problem] = []
    bound: dict[str, tuple[Path, int]] = {}
    for path in (p.resolve() for p in modules):
        module = resolver.module(path)
        bindings = _bindings(module)
        problems += _stray_statement_calls(module)
        for name, line in bindings.values():
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
        found, more = _uses(module, bindings, resolver)
        uses += found
        problems += more
    for name, stmt in statements.items():
        if name not in bound:
            problems.append(
                Problem(stmt.path, stmt.line, name, "no module binds this statement (dead SQL)")
            )
    return Usage(tuple(uses), tuple(sorted(problems)))


class _Module:
    """A parsed module: its imports, classes and module-level assignments."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # local name -> (module, level, imported name or None for `import module`)
        self.imports: dict[str, tuple[str, int, str | None]] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.assigned: dict[str, ast.expr] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    local = alias.asname or alias.name
                    self.imports[local] = (node.module or "", node.level, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:  # import a.b as c: c is a.b
                        self.imports[alias.asname] = (alias.name, 0, None)
                    else:  # import a.b: a is a
                        top = alias.name.split(".")[0]
                        self.imports[top] = (top, 0, None)
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                if isinstance(node.targets[0], ast.Name):
                    self.assigned[node.targets[0].id] = node.value
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                self.assigned[node.target.id] = node.value


def _is_statement_call(module: _Module, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name) and func.id == "statement":
        source = module.imports.get("statement")
        return source is not None and source[0].rpartition(".")[2] == "sql"
    return isinstance(func, ast.Attribute) and func.attr == "statement"


def _binding_calls(module: _Module) -> dict[ast.Call, tuple[str, str]]:
    """Module-level `_X = statement("name")`: the call -> (variable, statement name)."""
    found: dict[ast.Call, tuple[str, str]] = {}
    for node in module.tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and _is_statement_call(module, value)):
            continue
        assert isinstance(value, ast.Call)
        args = value.args
        if len(args) == 1 and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            found[value] = (target.id, args[0].value)
    return found


def _bindings(module: _Module) -> dict[str, tuple[str, int]]:
    """Module-level `_X = statement("name")`: variable -> (statement name, line)."""
    return {var: (name, call.lineno) for call, (var, name) in _binding_calls(module).items()}


def _stray_statement_calls(module: _Module) -> list[Problem]:
    bound = _binding_calls(module)
    return [
        Problem(
            module.path,
            node.lineno,
            "",
            'bind statements at module level with a literal name: _X = statement("name")',
        )
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Call) and _is_statement_call(module, node) and node not in bound
    ]


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _functions(tree: ast.Module) -> dict[ast.AST, tuple[str, ast.AST | None]]:
    """Every node -> (qualified name of its innermost function, that function node)."""
    owner: dict[ast.AST, tuple[str, ast.AST | None]] = {}

    def visit(node: ast.AST, prefix: str, current: tuple[str, ast.AST | None]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                owner[child] = current
                visit(child, f"{name}.", (name, child))
            elif isinstance(child, ast.ClassDef):
                owner[child] = current
                visit(child, f"{prefix}{child.name}.", current)
            else:
                owner[child] = current
                visit(child, prefix, current)

    visit(tree, "", ("", None))
    return owner


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _uses(
    module: _Module, bindings: dict[str, tuple[str, int]], resolver: _Resolver
) -> tuple[list[Use], list[Problem]]:
    parents = _parents(module.tree)
    owners = _functions(module.tree)
    uses: list[Use] = []
    problems: list[Problem] = []
    functions: dict[str, set[str]] = {v: set() for v in bindings}
    for node in ast.walk(module.tree):
        if not (isinstance(node, ast.Name) and node.id in bindings):
            continue
        if not isinstance(node.ctx, ast.Load):
            continue
        name = bindings[node.id][0]
        function, function_node = owners[node]
        if function_node is None:
            problems.append(Problem(module.path, node.lineno, name, "used outside a function"))
            continue
        functions[node.id].add(function)
        use, found = _use(module, node, name, function, function_node, parents, resolver)
        problems += found
        if use is not None:
            uses.append(use)
    for variable, names in functions.items():
        name, line = bindings[variable]
        if not names:
            problems.append(Problem(module.path, line, name, f"{variable} is bound but never run"))
        elif len(names) > 1:
            problems.append(
                Problem(
                    module.path,
                    line,
                    name,
                    f"run by {len(names)} functions ({', '.join(sorted(names))}); "
                    "each statement belongs to exactly one",
                )
            )
    return uses, problems


def _use(
    module: _Module,
    node: ast.Name,
    name: str,
    function: str,
    function_node: ast.AST,
    parents: dict[ast.AST, ast.AST],
    resolver: _Resolver,
) -> tuple[Use | None, list[Problem]]:
    """The call that runs the statement `node` refers to: its params and row class."""
    how = _call_of(node, parents)
    if how is None:
        return None, [Problem(module.path, node.lineno, name, f"cannot follow this use: {_HOW}")]
    helper, call = how
    problems: list[Problem] = []
    many = helper == "text" and getattr(call.func, "attr", "") == "executemany"
    params_expr = _argument(call, 1, "params_seq" if many else "params")
    if many and isinstance(params_expr, ast.ListComp | ast.GeneratorExp):
        params_expr = params_expr.elt  # one dict literal per row
    params: frozenset[str] | None = frozenset()
    if params_expr is not None or helper != "text":
        params, why = _param_keys(params_expr, function_node)
        if why:
            problems.append(Problem(module.path, call.lineno, name, why))
    model: Model | None = None
    if helper in ROW_HELPERS:
        row = _argument(call, 2, "row")
        resolved = resolver.model(module, row) if row is not None else "no row class given"
        if isinstance(resolved, str):
            problems.append(Problem(module.path, call.lineno, name, resolved))
        else:
            model = resolved
    return Use(name, module.path, call.lineno, function, helper, params, model), problems


def _call_of(node: ast.Name, parents: dict[ast.AST, ast.AST]) -> tuple[str, ast.Call] | None:
    parent = parents.get(node)
    if isinstance(parent, ast.Attribute) and parent.attr in ("text", "compose"):
        passed: ast.AST = parent  # _X.text, or the call _X.compose(...)
        if parent.attr == "compose":
            composed = parents.get(parent)
            if not (isinstance(composed, ast.Call) and composed.func is parent):
                return None
            passed = composed
        call = parents.get(passed)
        if (
            isinstance(call, ast.Call)
            and call.args[:1] == [passed]
            and isinstance(call.func, ast.Attribute)
            and call.func.attr in _RAW_METHODS
        ):
            return "text", call
        return None
    if (
        isinstance(parent, ast.Call)
        and parent.args[:1] == [node]
        and isinstance(parent.func, ast.Attribute)
        and parent.func.attr in _HELPERS
    ):
        return parent.func.attr, parent
    return None


_PARAMS_RULE = "params must be a dict literal with literal string keys, or a variable assigned one"


def _param_keys(
    expr: ast.expr | None, function: ast.AST
) -> tuple[frozenset[str] | None, str | None]:
    if isinstance(expr, ast.Dict):
        return _dict_keys(expr)
    if isinstance(expr, ast.Name):
        values: list[ast.expr | None] = []
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets)
            ) or (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == expr.id
            ):
                values.append(node.value)
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store | ast.Del)
                and isinstance(node.value, ast.Name)
                and node.value.id == expr.id
            ):
                return None, f"params {expr.id!r} is changed after it is built; {_PARAMS_RULE}"
        if len(values) == 1 and isinstance(values[0], ast.Dict):
            return _dict_keys(values[0])
        return (
            None,
            f"params {expr.id!r} is not assigned a dict literal exactly once; {_PARAMS_RULE}",
        )
    return None, _PARAMS_RULE


def _dict_keys(node: ast.Dict) -> tuple[frozenset[str] | None, str | None]:
    keys: list[str] = []
    for key in node.keys:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None, _PARAMS_RULE
        keys.append(key.value)
    return frozenset(keys), None


_TYPING_OPTIONAL = frozenset({"Optional"})
_TYPING_UNION = frozenset({"Union"})
_TYPING_SEQUENCE = frozenset({"list", "List", "Sequence"})


class _Resolver:
    """Follows imports between modules to find dataclasses and type aliases."""

    def __init__(self) -> None:
        self._modules: dict[Path, _Module] = {}

    def module(self, path: Path) -> _Module:
        if path not in self._modules:
            self._modules[path] = _Module(path)
        return self._modules[path]

    def _module_path(self, importer: _Module, name: str, level: int) -> Path | None:
        if level:
            base = importer.path.parent
            for _ in range(level - 1):
                base = base.parent
            target = base.joinpath(*name.split(".")) if name else base
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    return candidate.resolve()
            return None
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec else None
        return Path(origin).resolve() if origin and origin.endswith(".py") else None

    def _imported(self, module: _Module, local: str) -> tuple[_Module | None, str | None]:
        """The module a local name comes from, and its name there (None: it is the module)."""
        source = module.imports.get(local)
        if source is None:
            return None, None
        name, level, original = source
        if original is None:
            path = self._module_path(module, name, level)
            return (self.module(path) if path else None), None
        path = self._module_path(module, name, level)
        target = self.module(path) if path else None
        if target is not None and (original in target.classes or original in target.assigned):
            return target, original
        if target is not None and original in target.imports:
            return self._imported(target, original)
        sub = self._module_path(module, f"{name}.{original}" if name else original, level)
        if sub is not None:
            return self.module(sub), None
        return target, original

    def _class(self, module: _Module, expr: ast.expr) -> tuple[_Module, ast.ClassDef] | None:
        if isinstance(expr, ast.Name):
            if expr.id in module.classes:
                return module, module.classes[expr.id]
            target, original = self._imported(module, expr.id)
            if target is not None and original is not None and original in target.classes:
                return target, target.classes[original]
            return None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            target, original = self._imported(module, expr.value.id)
            if target is not None and original is None and expr.attr in target.classes:
                return target, target.classes[expr.attr]
        return None

    def model(self, module: _Module, expr: ast.expr, depth: int = 0) -> Model | str:
        """The dataclass `expr` names in `module`, or why it cannot be read."""
        shown = ast.unparse(expr)
        found = self._class(module, expr)
        if found is None or depth > 8:
            return f"cannot find the dataclass {shown} from {module.path.name}"
        where, cls = found
        if not any(_is_dataclass_decorator(d) for d in cls.decorator_list):
            return f"{cls.name} is not a dataclass"
        fields: dict[str, Field] = {}
        for base in cls.bases:
            inherited = self.model(where, base, depth + 1)
            if isinstance(inherited, str):
                return f"{cls.name}: base {ast.unparse(base)}: {inherited}"
            fields.update((f.name, f) for f in inherited.fields)
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if "ClassVar" in ast.unparse(node.annotation):
                    continue
                types, optional = self.types(where, node.annotation)
                fields[node.target.id] = Field(
                    node.target.id, types, optional, ast.unparse(node.annotation)
                )
        return Model(cls.name, tuple(fields.values()))

    def types(self, module: _Module, expr: ast.expr, depth: int = 0) -> tuple[frozenset[str], bool]:
        """The Python type names an annotation admits, and whether it admits None."""
        if depth > 16:
            return frozenset({ast.unparse(expr)}), False
        if isinstance(expr, ast.Constant):
            if expr.value is None:
                return frozenset(), True
            if isinstance(expr.value, str):
                return self.types(module, ast.parse(expr.value, mode="eval").body, depth + 1)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            left, left_optional = self.types(module, expr.left, depth + 1)
            right, right_optional = self.types(module, expr.right, depth + 1)
            return left | right, left_optional or right_optional
        if isinstance(expr, ast.Name):
            if expr.id == "None":
                return frozenset(), True
            alias = self._alias(module, expr.id)
            if alias is not None:
                return self.types(alias[0], alias[1], depth + 1)
            return frozenset({expr.id}), False
        if isinstance(expr, ast.Attribute):
            return frozenset({expr.attr}), False
        if isinstance(expr, ast.Subscript):
            return self._subscript(module, expr, depth)
        return frozenset({ast.unparse(expr)}), False

    def _alias(self, module: _Module, name: str) -> tuple[_Module, ast.expr] | None:
        if name in module.assigned:
            return module, module.assigned[name]
        target, original = self._imported(module, name)
        if target is not None and original is not None and original in target.assigned:
            return target, target.assigned[original]
        return None

    def _subscript(
        self, module: _Module, expr: ast.Subscript, depth: int
    ) -> tuple[frozenset[str], bool]:
        head = expr.value
        head_name = head.id if isinstance(head, ast.Name) else getattr(head, "attr", "")
        items = list(expr.slice.elts) if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        if head_name == "Literal":
            names = {type(i.value).__name__ for i in items if isinstance(i, ast.Constant)}
            optional = "NoneType" in names
            return frozenset(names - {"NoneType"}), optional
        if head_name == "Annotated":
            return self.types(module, items[0], depth + 1)
        if head_name in _TYPING_OPTIONAL or head_name in _TYPING_UNION:
            types: frozenset[str] = frozenset()
            optional = head_name in _TYPING_OPTIONAL
            for item in items:
                more, more_optional = self.types(module, item, depth + 1)
                types, optional = types | more, optional or more_optional
            return types, optional
        if head_name in _TYPING_SEQUENCE:
            inner, _ = self.types(module, items[0], depth + 1)
            return frozenset(f"list[{t}]" for t in inner), False
        return frozenset({head_name}), False


def _is_dataclass_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "dataclass") or (
        isinstance(target, ast.Attribute) and target.attr == "dataclass"
    )
