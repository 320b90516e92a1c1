"""Typed records checked on the way in: the base of the config sections, manifests and command parameters.

A :class:`Record` is a frozen ``msgspec.Struct`` that refuses unknown fields. Its constraints
(``Annotated[int, Meta(ge=1, description=...)]``) are checked when it is decoded
(:func:`decode`: ``msgspec.convert``, ``msgspec.json.decode``, ``msgspec.toml.decode``) and, because
msgspec does not check them on ``Record(...)``, again in ``__post_init__``: a record exists only valid.
On top of msgspec's checks every record refuses non-finite floats (NaN and infinities pass ``ge``/``le``
comparisons in surprising ways: ``mean = nan`` would make every prediction garbage) and runs its
``cross_check()`` (relations between fields, e.g. ``min <= max``).

:func:`problems` lists *every* problem of a mapping (key path, value, message), field by field and
section by section, for ``edge-agent check-config``; msgspec itself stops at the first.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import msgspec

T = TypeVar("T", bound="Record")
Problem = tuple[str, Any, str]  # (key path, value, message)


class Secret:
    """A secret value (a password): ``**********`` in reprs, logs and ``check-config``; read it explicitly."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def dec_hook(typ: type, obj: Any) -> Any:
    """The types msgspec does not know: paths and secrets, from text (or already built)."""
    if isinstance(obj, typ):
        return obj
    if typ is Path and isinstance(obj, str):
        return Path(obj)
    if typ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise TypeError(
        f"Expected `{'str' if typ in (Path, Secret) else typ.__name__}`, got `{type(obj).__name__}`"
    )


def enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Secret):
        return str(obj)  # masked: whoever needs the value reads it with get_secret_value()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def to_builtins(record: Any) -> Any:
    """Plain dicts/lists/str (paths as text, secrets masked): for JSON, reports and printing."""
    return msgspec.to_builtins(record, enc_hook=enc_hook)


def nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(nonfinite(v) for v in value)
    if isinstance(value, Mapping):
        return any(nonfinite(v) for v in value.values())
    return False


def _message(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(msgspec's message, the location suffix inside the value, e.g. ``[0]``)."""
    text = str(exc)
    msg, sep, loc = text.rpartition(" - at `")
    if not sep:
        return text, ""
    loc = loc.rstrip("`")
    return msg, loc[1:] if loc.startswith("$") else ""


@cache
def _fields(cls: type) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)


def record_type(typ: Any) -> type[Record] | None:
    """The Record class a field holds (``X`` or ``Optional[X]``), else None."""
    if get_origin(typ) is Annotated:
        return record_type(get_args(typ)[0])
    if isinstance(typ, type) and issubclass(typ, Record):
        return typ
    if get_origin(typ) in (Union, types.UnionType):
        subs = [a for a in get_args(typ) if a is not type(None)]
        if len(subs) == 1:
            return record_type(subs[0])
    return None


class Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every checked record (see the module docstring)."""

    def __post_init__(self) -> None:
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, Record) and record_type(f.type) is type(value):
                continue  # built (and so checked) already
            try:
                msgspec.convert(value, f.type, dec_hook=dec_hook)
            except msgspec.ValidationError as exc:
                msg, loc = _message(exc)
                raise ValueError(f"{f.name}{loc}: {msg}") from None
            if nonfinite(value):
                raise ValueError(f"{f.name}: must be a finite number, got {value!r}")
            for suffix, _value, why in self.field_problems(f.name, value):
                raise ValueError(f"{f.name}{suffix}: {why}")
        for key, _value, msg in self.cross_check():
            raise ValueError(f"{key}: {msg}")

    @classmethod
    def field_problems(cls, name: str, value: Any) -> list[Problem]:
        """What is wrong with one field's (type-checked) value beyond its Meta constraints, as
        (key suffix such as ``""`` or ``"[2]"``, value, message); empty if fine."""
        return []

    def cross_check(self) -> list[Problem]:
        """Problems between fields as (field, value, message); override in records that have any.

        It reads attributes only: :func:`problems` calls it on a namespace of the converted values.
        """
        return []


class DecodeError(ValueError):
    """A mapping that does not make a record; ``problems`` lists all of it (key path, value, message)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k} = {v!r}: {m}" for k, v, m in problems))


def decode(cls: type[T], data: Any, *, strict: bool = True) -> T:
    """``data`` (a parsed mapping) as a ``cls``; raise :class:`DecodeError` listing every problem.

    ``strict=False`` accepts text for numbers and booleans (environment variables).
    """
    try:
        return msgspec.convert(data, cls, strict=strict, dec_hook=dec_hook)
    except msgspec.ValidationError:
        found = problems(cls, data, strict=strict)
        if not found:  # cannot happen unless problems() misses a case msgspec checks: say msgspec's
            raise
        raise DecodeError(found) from None


def nearest(name: Any, choices: list[str]) -> str | None:
    """The choice closest to a misspelt ``name`` (difflib), if any is close."""
    near = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    return near[0] if near else None


def unknown_key(key: Any, known: list[str], what: str = "key") -> str:
    near = nearest(key, known)
    hint = f"did you mean {near!r}? " if near else ""
    return f"unknown {what} ({hint}valid {what}s: {', '.join(known)})"


def problems(cls: type[Record], data: Any, *, prefix: str = "", strict: bool = True) -> list[Problem]:
    """Every problem of ``data`` as a ``cls``: unknown keys, bad values, non-finite numbers, cross checks."""

    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if not isinstance(data, Mapping):
        return [(prefix or "<root>", data, f"expected a table (object) of {cls.__name__} keys")]
    fields = {f.encode_name: f for f in _fields(cls)}
    out: list[Problem] = [
        (at(str(k)), data[k], unknown_key(k, list(fields))) for k in data if k not in fields
    ]
    values: dict[str, Any] = {}
    unknown = len(out)
    for name, f in fields.items():
        if name not in data:
            if f.required:
                out.append((at(name), "<missing>", "required key is missing"))
            else:
                values[f.name] = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
            continue
        value = data[name]
        sub = record_type(f.type)
        if sub is not None and isinstance(value, Mapping):
            found = problems(sub, value, prefix=at(name), strict=strict)
            out += found
            if not found:
                values[f.name] = msgspec.convert(value, sub, strict=strict, dec_hook=dec_hook)
            continue
        try:
            converted = msgspec.convert(value, f.type, strict=strict, dec_hook=dec_hook)
        except msgspec.ValidationError as exc:
            msg, loc = _message(exc)
            out.append((at(name) + loc, value, msg))
            continue
        if nonfinite(converted):
            out.append((at(name), value, "must be a finite number (not nan or inf)"))
            continue
        found = cls.field_problems(f.name, converted)
        if found:
            out += [(at(name) + suffix, v, why) for suffix, v, why in found]
            continue
        values[f.name] = converted
    if len(out) == unknown:
        # Every value is fine on its own (unknown keys aside): check the relations between them.
        out += [(at(k), v, m) for k, v, m in cls.cross_check(types.SimpleNamespace(**values))]  # type: ignore[arg-type]
    return out
