"""SQL is composed with ``psycopg.sql`` or query parameters, never by string building.

An AST check over every module of the packages (core, ingest, signals, nrr, basewatch, bench):
the query given to ``execute``, ``executemany``, ``copy`` or ``stream`` must not be a string (or
the ``.encode()`` of one) built with an f-string with placeholders, ``str.format``, ``%``, ``+``
or ``str.join``, and ``sql.SQL`` must not wrap such a string (that would hand it back to the
server as trusted SQL text). ``sql.SQL(...).format``/``.join`` and ``+`` between composables
are the intended way and pass; a value from another module or a function's caller outside this
module counts as unknown and passes (the check follows names, not types).

Decisions:
- The query is followed through names: local assignments and loop targets in the function,
  its enclosing functions, module constants, ``self.`` attributes assigned in the class, a
  function of the module whose return value is passed, and a parameter through the calls to
  its function in the same module; containers (lists, tuples, dicts) count by their worst
  element. That finds ``query = _SERIES.format(...).encode()`` two lines above the execute,
  and a statement list built from f-strings at import time.
- Only string building is forbidden, not module constants of SQL text: ``"SELECT ..."`` in a
  constant is fine, however it is passed.
- The checker is exercised on snippets below, so a checker that finds nothing fails too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ingest", "signals", "nrr", "basewatch", "bench")
SINKS = {"execute", "executemany", "copy", "stream"}
_COMPOSABLES = {"Identifier", "Literal", "Placeholder", "Composed", "DEFAULT"}
# str methods whose result is as trusted as their receiver
_STR_METHODS = {"strip", "rstrip", "lstrip", "upper", "lower", "replace", "removeprefix"}

STR, BYTES, SQL, OTHER = "str", "bytes", "sql", "other"


@dataclass
class Value:
    """What an expression is (``STR``, ``BYTES``, ``SQL`` composable or ``OTHER``) and the
    reasons it was built from strings (empty when it was not)."""

    kind: str
    reasons: list[str] = field(default_factory=list)


def _merge(values: list[Value]) -> Value:
    kinds = [v.kind for v in values if v.kind != OTHER]
    kind = kinds[0] if kinds else OTHER
    return Value(kind, [r for v in values for r in v.reasons])


class _Module:
    """One parsed module and the scopes needed to follow a name to its assignments."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.parent: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, []).append(node)
        self._busy: set[tuple[int, str]] = set()

    def scope_of(self, node: ast.AST) -> ast.AST:
        """The innermost function (or the module) holding ``node``."""
        current = self.parent.get(node)
        while current is not None and not isinstance(
            current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ):
            current = self.parent.get(current)
        return current if current is not None else self.tree

    def class_of(self, node: ast.AST) -> ast.ClassDef | None:
        current = self.parent.get(node)
        while current is not None and not isinstance(current, ast.ClassDef):
            current = self.parent.get(current)
        return current

    def _own_nodes(self, scope: ast.AST) -> Iterator[ast.AST]:
        """Nodes of ``scope`` not inside a nested function or class."""
        stack = list(ast.iter_child_nodes(scope))
        while stack:
            node = stack.pop()
            yield node
            if not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            ):
                stack.extend(ast.iter_child_nodes(node))

    def value(self, node: ast.expr | None, scope: ast.AST) -> Value:
        if node is None:
            return Value(OTHER)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return Value(STR)
            return Value(BYTES if isinstance(node.value, bytes) else OTHER)
        if isinstance(node, ast.JoinedStr):
            built = any(isinstance(v, ast.FormattedValue) for v in node.values)
            return Value(STR, [f"f-string at line {node.lineno}"] if built else [])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            left, right = self.value(node.left, scope), self.value(node.right, scope)
            if isinstance(node.op, ast.Mod):
                if left.kind in (STR, BYTES):
                    return Value(left.kind, [*left.reasons, f"% formatting at line {node.lineno}"])
                return Value(OTHER)
            if STR in (left.kind, right.kind) or BYTES in (left.kind, right.kind):
                kind = BYTES if BYTES in (left.kind, right.kind) else STR
                reasons = [*left.reasons, *right.reasons, f"+ concatenation at line {node.lineno}"]
                return Value(kind, reasons)
            return _merge([left, right])
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        if isinstance(node, ast.Name):
            return self._name(node.id, scope, node)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self._attribute(node.attr, node)
            if node.attr in _COMPOSABLES:
                return Value(SQL)
            return Value(OTHER)
        if isinstance(node, ast.Subscript):
            return self.value(node.value, scope)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return _merge([self.value(e, scope) for e in node.elts])
        if isinstance(node, ast.Dict):
            return _merge([self.value(v, scope) for v in node.values])
        if isinstance(node, ast.IfExp):
            return _merge([self.value(node.body, scope), self.value(node.orelse, scope)])
        if isinstance(node, ast.Starred):
            return self.value(node.value, scope)
        return Value(OTHER)

    def _call(self, node: ast.Call, scope: ast.AST) -> Value:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        sql_module = isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "sql"
        if name == "SQL" and (sql_module or isinstance(func, ast.Name)):
            text = self.value(node.args[0] if node.args else None, scope)
            if text.reasons:
                return Value(SQL, [*text.reasons, f"sql.SQL of a built string at {node.lineno}"])
            return Value(SQL)
        if name in _COMPOSABLES and (sql_module or isinstance(func, ast.Name)):
            return Value(SQL)
        if isinstance(func, ast.Attribute):
            receiver = self.value(func.value, scope)
            if name in ("format", "join") and receiver.kind == STR:
                return Value(STR, [*receiver.reasons, f"str.{name} at line {node.lineno}"])
            if name in ("format", "join") and receiver.kind == SQL:
                return Value(SQL, receiver.reasons)
            if name == "encode" and receiver.kind in (STR, OTHER):
                return Value(BYTES, [*receiver.reasons, f".encode() at line {node.lineno}"])
            if name in _STR_METHODS and receiver.kind == STR:
                return receiver
            if name in ("items", "values", "copy"):
                return receiver
            return Value(OTHER)
        if isinstance(func, ast.Name) and func.id in self.functions:
            return self._returns(func.id)
        return Value(OTHER)

    def _returns(self, function: str) -> Value:
        key = (id(self.functions), "def " + function)
        if key in self._busy:
            return Value(OTHER)
        self._busy.add(key)
        try:
            found = [
                self.value(n.value, definition)
                for definition in self.functions[function]
                for n in self._own_nodes(definition)
                if isinstance(n, ast.Return) and n.value is not None
            ]
        finally:
            self._busy.discard(key)
        return _merge(found)

    def _assigned(self, name: str, scope: ast.AST) -> list[_Binding]:
        """What binds ``name`` in ``scope`` (assignments, loop, comprehension and with
        targets)."""
        found: list[_Binding] = []
        for node in self._own_nodes(scope):
            if isinstance(node, ast.Assign):
                found.extend(_Binding.of(t, name, node.value) for t in node.targets)
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
                if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
                    # a name that reaches a query and grows by += is a string growing
                    grown = ast.copy_location(
                        ast.BinOp(ast.Constant(""), ast.Add(), node.value), node
                    )
                    found.append(_Binding.of(node.target, name, grown))
                else:
                    found.append(_Binding.of(node.target, name, node.value))
            elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                found.append(_Binding.of(node.target, name, node.iter, iterated=True))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                found.append(_Binding.of(node.optional_vars, name, node.context_expr))
        return [b for b in found if b.bound]

    def _bound_value(self, binding: _Binding, scope: ast.AST) -> Value:
        """The value a binding gives its name: element ``position`` of each row unpacked,
        where the rows can be told, else the worst of the whole expression."""
        if binding.position is None and not binding.iterated:
            return self.value(binding.expr, scope)
        if binding.iterated:
            rows = self._elements(binding.expr, scope)
        else:
            resolved = self._resolve(binding.expr, scope)
            rows = []
            for expr, where in resolved:
                if isinstance(expr, ast.Subscript):
                    rows.extend(self._elements(expr.value, where) or [(expr, where)])
                else:
                    rows.append((expr, where))
        if not rows or binding.position is None:
            return _merge([self.value(e, w) for e, w in rows] or [self.value(binding.expr, scope)])
        values = []
        for row, where in rows:
            if isinstance(row, ast.Tuple | ast.List) and binding.position < len(row.elts):
                values.append(self.value(row.elts[binding.position], where))
            else:
                values.append(self.value(row, where))
        return _merge(values)

    def _resolve(self, expr: ast.expr, scope: ast.AST) -> list[tuple[ast.expr, ast.AST]]:
        """``expr``, or what a name is plainly assigned (no unpacking) where it is bound."""
        if not isinstance(expr, ast.Name):
            return [(expr, scope)]
        current: ast.AST | None = scope
        while current is not None:
            bound = self._assigned(expr.id, current)
            if bound:
                if any(b.position is not None or b.iterated for b in bound):
                    return [(expr, scope)]
                return [r for b in bound for r in self._resolve(b.expr, current)]
            if current is self.tree:
                break
            current = self.scope_of(current)
        return [(expr, scope)]

    def _elements(self, expr: ast.expr, scope: ast.AST) -> list[tuple[ast.expr, ast.AST]]:
        """The elements of a container written out in the module (empty when unknown)."""
        found: list[tuple[ast.expr, ast.AST]] = []
        for node, where in self._resolve(expr, scope):
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                found.extend((e, where) for e in node.elts)
            elif isinstance(node, ast.Dict):
                found.extend((v, where) for v in node.values)
            elif isinstance(node, ast.Subscript):
                for element, inner in self._elements(node.value, where):
                    found.extend(self._elements(element, inner))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "items"
            ):
                for mapping, inner in self._resolve(node.func.value, where):
                    if isinstance(mapping, ast.Dict):
                        found.extend(
                            (ast.Tuple([k or ast.Constant(None), v]), inner)
                            for k, v in zip(mapping.keys, mapping.values, strict=True)
                        )
            else:
                return []
        return found

    def _name(self, name: str, scope: ast.AST, at: ast.AST) -> Value:
        key = (id(scope), name)
        if key in self._busy:
            return Value(OTHER)
        self._busy.add(key)
        try:
            current: ast.AST | None = scope
            while current is not None:
                bound = self._assigned(name, current)
                if bound:
                    return _merge([self._bound_value(b, current) for b in bound])
                if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef) and name in {
                    a.arg for a in _arguments(current)
                }:
                    return self._parameter(current, name)
                if current is self.tree:
                    return Value(OTHER)
                current = self.scope_of(current)
            return Value(OTHER)
        finally:
            self._busy.discard(key)

    def _parameter(self, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> Value:
        """A parameter: what the calls to its function in this module pass for it."""
        positional = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
        if positional and positional[0] in ("self", "cls"):
            positional = positional[1:]
        found: list[Value] = []
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            called = getattr(node.func, "attr", getattr(node.func, "id", None))
            if called != function.name:
                continue
            scope = self.scope_of(node)
            for keyword in node.keywords:
                if keyword.arg == name:
                    found.append(self.value(keyword.value, scope))
            if name in positional and positional.index(name) < len(node.args):
                found.append(self.value(node.args[positional.index(name)], scope))
        return _merge(found)

    def _attribute(self, attr: str, at: ast.AST) -> Value:
        cls = self.class_of(at)
        if cls is None:
            return Value(OTHER)
        found = []
        for node in ast.walk(cls):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == attr
                        and getattr(target.value, "id", "") == "self"
                        and node.value is not None
                    ):
                        found.append(self.value(node.value, self.scope_of(node)))
        return _merge(found)


def _arguments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


@dataclass(frozen=True)
class _Binding:
    """An expression bound to a name: whole, or at ``position`` of a tuple target;
    ``iterated``: the name takes the expression's elements (a loop target)."""

    expr: ast.expr
    position: int | None
    iterated: bool
    bound: bool

    @classmethod
    def of(cls, target: ast.expr, name: str, expr: ast.expr, iterated: bool = False) -> _Binding:
        position = None
        if isinstance(target, ast.Tuple | ast.List) and not any(
            isinstance(e, ast.Starred) for e in target.elts
        ):
            hits = [
                i for i, e in enumerate(target.elts) if isinstance(e, ast.Name) and e.id == name
            ]
            position = hits[0] if hits else None
        return cls(expr, position, iterated, _binds(target, name))


def _binds(target: ast.expr, name: str) -> bool:
    if isinstance(target, ast.Name):
        return target.id == name
    if isinstance(target, ast.Tuple | ast.List):
        return any(_binds(e, name) for e in target.elts)
    if isinstance(target, ast.Starred):
        return _binds(target.value, name)
    return False


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Every query built from strings in ``source``: ``file:line: sink: reasons``."""
    module = _Module(ast.parse(source, filename))
    found = []
    for node in ast.walk(module.tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in SINKS or getattr(node.func.value, "id", "") in ("copy", "shutil"):
            continue
        query = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg == "query":
                query = keyword.value
        if query is None:
            continue
        value = module.value(query, module.scope_of(node))
        if value.reasons:
            reasons = "; ".join(dict.fromkeys(value.reasons))
            found.append(f"{filename}:{node.lineno}: {node.func.attr}: {reasons}")
    return found


def package_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_package_module_builds_sql_from_strings() -> None:
    assert len(package_modules()) > 50
    found = [
        v
        for path in package_modules()
        for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == [], "SQL built from strings:\n" + "\n".join(found)


BUILT = {
    "f-string": """
def f(conn, t):
    conn.execute(f"SELECT * FROM {t}")
""",
    "format + encode through a name": """
_Q = "SELECT {columns} FROM x"
def f(conn, cols):
    query = _Q.format(columns=cols).encode()
    for row in conn.execute(query):
        pass
""",
    "percent": """
def f(cur, t):
    cur.executemany("DELETE FROM %s" % t, [])
""",
    "concatenation of constants": """
_A = "SELECT 1"
_B = " WHERE true"
def f(conn):
    conn.execute(_A + _B)
""",
    "encode of a constant": """
_A = "SELECT 1"
def f(conn):
    conn.execute(_A.encode())
""",
    "copy": """
def f(cur, cols):
    with cur.copy(f"COPY t ({cols}) FROM STDIN") as c:
        pass
""",
    "join": """
def f(conn, cols):
    conn.execute("SELECT " + ", ".join(cols))
""",
    "statement list in sql.SQL": """
P = "SELECT"
_S = [f"GRANT {P} ON t TO {{role}}"]
def f(conn):
    for s in _S:
        conn.execute(sql.SQL(s).format(role=sql.Identifier("r")))
""",
    "attribute": """
class A:
    def __init__(self, c):
        self.q = "SELECT " + c
    def run(self, conn):
        conn.execute(self.q)
""",
    "helper's return": """
def _q(t):
    return "SELECT * FROM {t}".format(t=t)
def f(conn):
    conn.execute(_q("x"))
""",
    "parameter": """
def _run(conn, statement):
    conn.execute(statement)
def f(conn, t):
    _run(conn, f"DROP TABLE {t}")
""",
    "unpacked from a dict of tuples": """
_L = {"a": (f"SELECT {1}", "fine"), "b": ("SELECT 2", "fine")}
def f(conn, name):
    query, text = _L[name]
    conn.execute(query)
""",
    "loop over pairs": """
_S = {False: (("a", "SELECT 1"),), True: (("b", "SELECT " + "2"),)}
def f(conn, t):
    for name, statement in _S[t]:
        conn.execute(statement)
""",
    "augmented assignment": """
def f(conn, w):
    q = "SELECT 1"
    q += w
    conn.execute(q)
""",
}

COMPOSED = {
    "constant with parameters": """
def f(conn, x):
    conn.execute("SELECT %s", (x,))
""",
    "implicit concatenation": """
_Q = ("SELECT 1"
      " WHERE %(x)s")
def f(c):
    c.execute(_Q, {"x": 1})
""",
    "sql.SQL format": """
def f(conn, t):
    conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t)))
""",
    "composable +": """
_A = sql.SQL("SELECT 1")
def f(conn, w):
    conn.execute(_A + sql.SQL(" WHERE {}").format(w))
""",
    "sql join": """
def f(conn, cols):
    q = sql.SQL("SELECT {} FROM t").format(sql.SQL(", ").join(map(sql.Identifier, cols)))
    conn.execute(q)
""",
    "other modules' copy": """
import copy
def f(x):
    return copy.copy(f"{x}")
""",
    "parameter from elsewhere": """
def f(conn, query):
    conn.execute(query)
""",
    "unpacked beside an f-string": """
_L = {"a": ("SELECT 1", f"text {2}")}
def f(conn, name):
    query, text = _L[name]
    conn.execute(query)
""",
    "loop over dict items": """
_S = {"a": "SELECT 1", f"name {2}": "SELECT 2"}
def f(conn):
    for name, statement in _S.items():
        conn.execute(statement)
""",
    "f-string in the parameters": """
def f(c, x):
    c.execute("SELECT %s", (f"%{x}%",))
""",
}


@pytest.mark.parametrize("source", BUILT.values(), ids=BUILT.keys())
def test_the_check_finds_built_sql(source: str) -> None:
    assert len(violations(source)) == 1


@pytest.mark.parametrize("source", COMPOSED.values(), ids=COMPOSED.keys())
def test_the_check_passes_composed_sql(source: str) -> None:
    assert violations(source) == []
