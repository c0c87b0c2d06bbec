"""One line for bad params (config.parse, config.load): the first bad key of a validation error,
what is wrong and what is allowed there, and where a YAML syntax error is."""
from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _allowed(root: type[BaseModel], loc: tuple) -> str:
    parent = _model_at(root, loc[:-1])
    if parent is None:
        return ""
    field = parent.model_fields.get(str(loc[-1]))
    if field is None:
        return "allowed keys: " + ", ".join(parent.model_fields)
    ann = field.annotation
    if get_origin(ann) is Literal:
        return "allowed values: " + ", ".join(map(str, get_args(ann)))
    if get_origin(ann) is list and get_args(ann) and get_origin(get_args(ann)[0]) is Literal:
        return "allowed values: " + ", ".join(map(str, get_args(get_args(ann)[0])))
    return field.description or ""


def format_error(err: ValidationError, root: type[BaseModel], source: str = "params.yaml") -> str:
    """One line naming the first bad key, what is wrong and what is allowed (`root`: the model
    that was validated, config.Params)."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, int)) or ("(top level)",)
    key = ".".join(map(str, loc))
    if first["type"] == "extra_forbidden":
        what = f"unknown key '{key}'"
    else:
        got = first.get("input")
        what = f"bad value for '{key}' ({first['msg'].removeprefix('Value error, ')}; got {got!r})"
    hint = _allowed(root, loc)
    return f"{source}: {what}" + (f"; {hint}" if hint else "")


def yaml_problem(e: yaml.YAMLError) -> str:
    """'not valid YAML at line L, column C (what)': the position of the problem, 1-based."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where} ({what}); fix it there"
