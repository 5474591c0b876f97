"""Spec fields: the pydantic base model and field types every part of a task spec is built from,
and the translation of pydantic's errors into ``(field, reason)`` rows.

The task spec (:mod:`metabackup.spec`), each source kind's options and each target type's settings
are models of :class:`SpecModel`: strict types (YAML's ``3.10`` is a float, never the string
"3.10"), unknown fields refused, ``null`` read as "not given".  A field type here carries the reason
it gives when a value is refused; :func:`problems` turns a ``ValidationError`` into rows such as
``("sources.OMS.target.max_backups", "must be between 1 and 100, got 0")``, adding a hint to quote a
name YAML read as a number, a boolean or a date.
"""

from __future__ import annotations

import datetime
import json
import posixpath
import re
import reprlib
from typing import Annotated, Any

import pendulum
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

# ---------------------------------------------------------------------------------------------
# Quoting values in messages
# ---------------------------------------------------------------------------------------------
_SHORT = reprlib.Repr()
_SHORT.maxstring = 200
_SHORT.maxother = 200
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def short(value: Any) -> str:
    """``repr`` cut to a readable length: a value quoted in a message never appears whole if long."""
    return _SHORT.repr(value)


def short_text(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 40]}...({len(text)} characters)...{text[-20:]}"


def key_text(key: Any) -> str:
    """A mapping key as it appears in a field path (``sources.OMS``), shortened if long or not text."""
    return key if isinstance(key, str) and len(key) <= 64 else short(key)


def inside(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies below it (both normalised absolute paths)."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


# ---------------------------------------------------------------------------------------------
# The base model
# ---------------------------------------------------------------------------------------------
class SpecModel(BaseModel):
    """A part of a task spec: immutable, strict, no unknown fields; a ``null`` value is "not given"."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ProblemRow(ValueError):
    """Raised by a model validator for a problem of one of its fields (not of the model as a whole)."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


# ---------------------------------------------------------------------------------------------
# Field types.  A validator raises ValueError(reason); the reason becomes the row's text.
# ---------------------------------------------------------------------------------------------
def between(low: int, high: int, default_hint: str = "") -> Any:
    """An integer in ``[low, high]`` ("must be between 1 and 100, got 0")."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return Annotated[int, AfterValidator(check), Field(json_schema_extra={"minimum": low, "maximum": high})]


def matching(pattern: str, reason: str, description: str) -> Any:
    """A string matching ``pattern`` whole; otherwise the row reads "<value> <reason>"."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{short(value)} {reason}")
        return value

    return Annotated[str, AfterValidator(check),
                     Field(description=description, json_schema_extra={"pattern": f"^{pattern}$"})]


def absolute_path(value: str) -> str:
    """An absolute path without '..', normalised."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {short(value)}")
    if ".." in value.split("/"):
        raise ValueError(f"must not contain '..' (it would escape its root): {short(value)}")
    return posixpath.normpath(value)


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must be a non-empty string, got str ''")
    return value


ConnId = matching(r"[A-Za-z0-9_.\-]{1,250}", "is not a valid Airflow connection id", "an Airflow connection id")
NameService = matching(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}", "is not a valid NameService name",
                       "an HDFS NameService, e.g. hacluster")
AbsolutePath = Annotated[str, AfterValidator(absolute_path), Field(description="an absolute local path")]
NonEmptyText = Annotated[str, AfterValidator(_non_empty)]


def path_under(value: str, root: str) -> str:
    """An absolute path, or one relative to ``root`` that stays inside it."""
    if ".." in value.split("/"):
        raise ValueError(f"must not contain '..' (it would escape its root {short(root)}): {short(value)}")
    return posixpath.normpath(value if value.startswith("/") else posixpath.join(root, value))


def data_path_of(info: ValidationInfo) -> str:
    """The task's ``data_path``, passed to nested models in the validation context."""
    return (info.context or {}).get("data_path", "/srv/BigData")


def _aware_time(value: Any) -> pendulum.DateTime:
    text = value.isoformat() if isinstance(value, (datetime.date, datetime.datetime)) else value
    if not isinstance(text, str):
        raise ValueError(f"must be an ISO-8601 time with a UTC offset, got {short(value)}")
    try:
        parsed = pendulum.parse(text, exact=True)
    except Exception as exc:  # pendulum raises several types
        raise ValueError(f"is not an ISO-8601 time ({short_text(exc)})") from None
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"must be a date and time, got {short(text)}")
    if parsed.tzinfo is None or re.search(r"(Z|[+\-]\d\d:?\d\d)$", text.strip()) is None:
        raise ValueError(f"is a naive time {short(text)}: add a UTC offset such as +08:00 or Z")
    return parsed


AwareTime = Annotated[pendulum.DateTime, PlainValidator(_aware_time),
                      WithJsonSchema({"type": "string", "format": "date-time",
                                      "description": "an ISO-8601 time with a UTC offset, e.g. 2026-11-24T10:00:00+08:00"})]


def _listed(value: Any) -> Any:
    """A YAML list stays a list (strict mode would refuse a tuple field given a list)."""
    return tuple(value) if isinstance(value, list) else value


#: A list of non-empty strings (paths, globs, DNs, tags), kept as a tuple.
TextList = Annotated[tuple[NonEmptyText, ...], BeforeValidator(_listed),
                     WithJsonSchema({"type": "array", "items": {"type": "string", "minLength": 1}})]


#: A list of absolute, normalised paths, kept as a tuple.
PathList = Annotated[tuple[AbsolutePath, ...], BeforeValidator(_listed),
                     WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": "^/"}})]


def _argv(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name a program and its arguments, e.g. [/usr/local/bin/get-backup-key, prod]")
    if any("\0" in part for part in value):
        raise ValueError(f"must not contain NUL characters, got {short(list(value))}")
    return value


#: a command as an argv list (run without a shell, with an allow-listed environment)
Argv = Annotated[TextList, AfterValidator(_argv), Field(description="argv of a program (run without a shell)")]


# ---------------------------------------------------------------------------------------------
# Errors into rows
# ---------------------------------------------------------------------------------------------
_TYPE_NAMES = {
    "string_type": "a string", "int_type": "an integer", "bool_type": "true or false", "list_type": "a list",
    "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping", "float_type": "a number",
}


def field_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith("["):
            path += part
        else:
            path = f"{path}.{key_text(part)}" if path else key_text(part)
    return path


def quote_hint(fld: str, value: Any, texts: dict[str, str]) -> str:
    """For a name YAML read as a number, boolean or date: how to write it as a string."""
    if isinstance(value, bool):
        read_as = "true or false"
    elif isinstance(value, (int, float)):
        read_as = "a number"
    elif isinstance(value, (datetime.date, datetime.datetime)):
        read_as = "a date"
    else:
        return ""
    text = texts.get(fld, str(value))
    if len(text) > 64:
        return f" (YAML reads it as {read_as}): put it in double quotes"
    quoted = json.dumps(text)
    key = fld.rsplit(".", 1)[-1]
    write = quoted if key.endswith("]") else f"{key}: {quoted}"
    return f" (YAML reads {text} as {read_as}); quote it: write {write}"


def _allowed_fields(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at ``loc`` (the location of its parent mapping)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or not isinstance(part, str) or part not in fields:
            return []
        current = _model_in(fields[part].annotation)
    fields = getattr(current, "model_fields", None) or {}
    return sorted(name for name, info in fields.items() if not info.exclude)


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def problems(error: ValidationError, prefix: str = "", texts: dict[str, str] | None = None,
             model: type[BaseModel] | None = None, extra_allowed: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(field, reason)`` rows of a ``ValidationError`` raised while validating ``model`` at ``prefix``."""
    texts = texts or {}
    rows: list[tuple[str, str]] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        kind, value = err["type"], err.get("input")
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, ProblemRow):
            rows.append((field_path(prefix, loc + tuple(cause.field.split("."))), cause.reason))
            continue
        fld = field_path(prefix, loc)
        if kind == "missing":
            reason = "is required"
        elif kind == "extra_forbidden":
            allowed = sorted({*_allowed_fields(model, loc[:-1]), *extra_allowed})
            reason = f"unknown field (allowed: {', '.join(allowed)})"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            reason = f"must be one of {', '.join(choices)}; got {short(value)}"
        elif kind in _TYPE_NAMES:
            what = _TYPE_NAMES[kind]
            if what == "a string" and loc and isinstance(loc[-1], int):
                what = "a non-empty string"
            hint = quote_hint(fld, value, texts) if kind == "string_type" else ""
            reason = f"must be {what}, got {type(value).__name__} {short(value)}{hint}"
        elif kind == "value_error" and cause is not None:
            reason = str(cause)
        else:
            reason = f"{err['msg']}, got {short(value)}"
        rows.append((fld or "<file>", reason))
    return rows
