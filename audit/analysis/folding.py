"""Constant folding under the effective configuration.

`Folding.fold(node)` evaluates an expression statically: literals, module constants, hyperparameter
attributes, `os.environ.get` (the README run command's value, else the default), user helpers wrapping it,
`getattr(args, "name", default)`, arithmetic, comparisons and boolean logic. Anything else is `UNKNOWN`.
It is a mixin of `Program`, which holds the tables it reads (`consts`, `attrs`, `env_helpers`, `config`).
"""

from __future__ import annotations

import ast
import re

from .astutil import ENV_FUNCS, UNKNOWN, dotted
from .config import Config, literal_from_text

MAX_FOLD_DEPTH = 30  # nested expressions / names followed before giving up
LOCAL_HOP = 6  # a function-local name costs this much depth: at most ~5 locals followed in a chain


class Folding:
    config: Config
    consts: dict
    attrs: dict
    env_helpers: set[str]

    def fold(self, node: ast.AST, cfg: Config | None = None, _depth: int = 0, local: dict | None = None):
        """Constant-fold `node` under `cfg`; `local` maps function-local names bound once to their value."""
        cfg = self.config if cfg is None else cfg
        if _depth > MAX_FOLD_DEPTH:
            return UNKNOWN
        f = lambda n: self.fold(n, cfg, _depth + 1, local)  # noqa: E731
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            vals = [f(e) for e in node.elts]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        if isinstance(node, ast.Name):
            if node.id == "__name__":
                return "__main__"  # the entry script runs as a program
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            if local and node.id in local and local[node.id] is not node:
                # locals bound once fold through each other, a few hops deep (`a = b + b` must not blow up)
                return self.fold(local[node.id], cfg, _depth + LOCAL_HOP, local)
            key = node.id.lower()
            if key in cfg.logged:
                return literal_from_text(cfg.logged[key])
            if node.id in self.consts:
                _, expr = self.consts[node.id]
                if expr is not node:
                    return f(expr)
            return UNKNOWN
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name in ("os.environ",):
                return UNKNOWN
            key = node.attr.lower()
            if key in cfg.logged:
                return literal_from_text(cfg.logged[key])
            if node.attr in self.attrs:
                _, expr = self.attrs[node.attr]
                return f(expr)
            return UNKNOWN
        if isinstance(node, ast.Subscript):
            if dotted(node.value) in ("os.environ", "environ"):
                key = f(node.slice)
                return cfg.env.get(key, UNKNOWN) if isinstance(key, str) else UNKNOWN
            return UNKNOWN
        if isinstance(node, ast.Call):
            return self._fold_call(node, cfg, f)
        if isinstance(node, ast.UnaryOp):
            v = f(node.operand)
            if v is UNKNOWN:
                return UNKNOWN
            try:
                return {ast.Not: lambda x: not x, ast.USub: lambda x: -x, ast.UAdd: lambda x: +x}[type(node.op)](v)
            except (KeyError, TypeError):
                return UNKNOWN
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            result = True if is_and else False
            unknown = False
            for v in map(f, node.values):
                if v is UNKNOWN:
                    unknown = True
                    continue
                if is_and and not v:
                    return v
                if not is_and and v:
                    return v
                result = v
            return UNKNOWN if unknown else result
        if isinstance(node, ast.Compare):
            left = f(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = f(right_node)
                if left is UNKNOWN or right is UNKNOWN:
                    return UNKNOWN
                try:
                    ok = COMPARE[type(op)](left, right)
                except (TypeError, KeyError):
                    return UNKNOWN
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp):
            a, b = f(node.left), f(node.right)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            try:
                return BINOP[type(node.op)](a, b)
            except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
                return UNKNOWN
        if isinstance(node, ast.IfExp):
            t = f(node.test)
            if t is UNKNOWN:
                return UNKNOWN
            return f(node.body) if t else f(node.orelse)
        return UNKNOWN

    def _fold_call(self, node: ast.Call, cfg: Config, f):
        name = dotted(node.func) or ""
        args = node.args
        if name in ENV_FUNCS or name.endswith(".environ.get"):
            key = f(args[0]) if args else UNKNOWN
            if not isinstance(key, str):
                return UNKNOWN
            if key in cfg.env:
                return cfg.env[key]
            if len(args) > 1:
                return f(args[1])
            for kw in node.keywords:
                if kw.arg == "default":
                    return f(kw.value)
            return None
        if isinstance(node.func, ast.Name) and node.func.id in self.env_helpers and args:
            key = f(args[0])
            default = f(args[1]) if len(args) > 1 else None
            for kw in node.keywords:
                if kw.arg in ("default", "d"):
                    default = f(kw.value)
            if isinstance(key, str) and key in cfg.env:
                raw = cfg.env[key]
                if isinstance(default, bool):
                    return raw.strip().lower() in ("1", "true", "yes", "on")
                return convert(type(default), raw) if default is not None and default is not UNKNOWN else raw
            return default
        if (
            name == "getattr"
            and len(args) >= 2
            and isinstance(args[1], ast.Constant)
            and isinstance(args[1].value, str)
        ):
            attr = args[1].value  # getattr(args, "slot_enabled", False) reads like args.slot_enabled
            if attr.lower() in cfg.logged:
                return literal_from_text(cfg.logged[attr.lower()])
            if attr in self.attrs:
                return f(self.attrs[attr][1])
            return f(args[2]) if len(args) > 2 else UNKNOWN
        if name in ("int", "float", "bool", "str") and len(args) == 1:
            v = f(args[0])
            if v is UNKNOWN:
                return UNKNOWN
            return convert({"int": int, "float": float, "bool": bool, "str": str}[name], v)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("lower", "upper", "strip") and not args:
            v = f(node.func.value)
            return getattr(v, node.func.attr)() if isinstance(v, str) else UNKNOWN
        if name in ("max", "min") and args:
            vals = [f(a) for a in args]
            if any(v is UNKNOWN for v in vals):
                return UNKNOWN
            try:
                return (max if name == "max" else min)(vals)
            except TypeError:
                return UNKNOWN
        return UNKNOWN


COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}
BINOP = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def convert(typ, v):
    """`int("3")`, `bool("0")` … as the program would convert a shell string; UNKNOWN when it would raise."""
    try:
        if typ is bool and isinstance(v, str):
            return v.strip().lower() not in ("", "0", "false", "no", "off")
        if typ is int and isinstance(v, str):
            return int(float(v)) if re.fullmatch(r"\s*-?\d+(\.0*)?\s*", v) else int(v)
        return typ(v)
    except (TypeError, ValueError, OverflowError):
        return UNKNOWN
