"""Typed, frozen configuration records built from plain mappings, with checked keys.

Every configuration object in raysearch (the spec's sections and each method's
parameters) is a frozen dataclass. This module turns YAML mappings into them and
back, and applies dotted overrides such as ``gmm.components: 4``. Any unknown key or
wrong type raises :class:`SpecError` whose message names the key and what is allowed,
so a typo never silently falls back to a default.

A field declared with :func:`param` carries its meaning and its allowed range as
field metadata; :func:`build` checks the range of every such field, and
``raysearch methods NAME`` prints both (:func:`describe_fields`). Choices come from
``Literal`` annotations. A class's own ``validate()`` method, called after the ranges
are checked, holds only the rules a range cannot say (one field against another, the
format of a string).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Opt:
    ...     lr: float = param(0.1, help="learning rate", gt=0)
    >>> build(Opt, {"lr": 0.5}).lr
    0.5
    >>> build(Opt, {"lr": 0})
    Traceback (most recent call last):
    ...
    raysearch.config.schema.SpecError: lr: expected a number > 0, got 0.0
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

__all__ = [
    "SpecError",
    "Range",
    "param",
    "FieldDoc",
    "describe_fields",
    "build",
    "to_dict",
    "flatten",
    "override",
    "field_paths",
]


class SpecError(ValueError):
    """A user-facing configuration error: one line naming the file, the key and the problem."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        self.problem = message
        parts = [p for p in (source, key) if p]
        super().__init__(": ".join([*parts, message]))

    def located(self, source: str) -> SpecError:
        """The same error, attributed to ``source`` (a file name) if it has none yet."""
        if self.source:
            return self
        return SpecError(self.problem, source=source, key=self.key)


def _num(x: Any) -> str:
    """A bound as a person writes it: 1 for 1.0, 0.5 for 0.5."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: bounds ``ge`` (>=), ``gt`` (>), ``le`` (<=), ``lt`` (<),
    each optional, and ``also``: values allowed outside the bounds (such as 0 = off).

    Example:
        >>> Range(ge=1, le=64).text(integer=True), Range(gt=0, le=1).text(integer=False)
        ('1..64', '(0, 1]')
        >>> Range(ge=4, also=(0,)).contains(2), Range(ge=4, also=(0,)).text(integer=True)
        (False, '0 or >= 4')
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()

    def __post_init__(self) -> None:
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise TypeError("give at most one lower bound (ge or gt) and one upper bound (le or lt)")

    def contains(self, value: float) -> bool:
        """True when ``value`` is allowed (NaN never is)."""
        if value in self.also:
            return True
        return not (
            (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        )

    def _bounds(self, integer: bool) -> tuple[str, bool]:
        """The bounds as text, and whether they are two-sided."""
        low = self.gt if self.gt is not None else self.ge
        high = self.lt if self.lt is not None else self.le
        if low is not None and high is not None:
            if integer and self.ge is not None and self.le is not None:
                return f"{_num(low)}..{_num(high)}", True
            left = "(" if self.gt is not None else "["
            right = ")" if self.lt is not None else "]"
            return f"{left}{_num(low)}, {_num(high)}{right}", True
        if low is not None:
            return f"{'>' if self.gt is not None else '>='} {_num(low)}", False
        if high is not None:
            return f"{'<' if self.lt is not None else '<='} {_num(high)}", False
        return "any", False

    def text(self, integer: bool) -> str:
        """The range as the table writes it: ``1..64``, ``> 0``, ``[0, 1)``, ``0 or >= 4``."""
        return " or ".join([*map(_num, self.also), self._bounds(integer)[0]])

    def expected(self, integer: bool) -> str:
        """The range as an error message writes it: ``an integer in 1..64``, ``a number > 0``."""
        bounds, two_sided = self._bounds(integer)
        noun = "an integer" if integer else "a number"
        return " or ".join([*map(_num, self.also), f"{noun} {'in ' if two_sided else ''}{bounds}"])


def param(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    also: tuple = (),
) -> Any:
    """A dataclass field: its default, its meaning in one line and, for numbers, its range.

    ``ge``/``gt``/``le``/``lt`` are the bounds (>=, >, <=, <), ``also`` values allowed
    outside them. :func:`build` refuses a value outside the range with a message naming
    the key and the range; ``raysearch methods NAME`` prints ``help`` and the range.
    Choices are not declared here: annotate the field with ``Literal[...]``.

    Example:
        >>> @dataclass(frozen=True)
        ... class Gmm:
        ...     components: int = param(4, help="Gaussians per rotation", ge=1, le=64)
        >>> build(Gmm, {"components": 100}, prefix="gmm")
        Traceback (most recent call last):
        ...
        raysearch.config.schema.SpecError: gmm.components: expected an integer in 1..64, got 100
    """
    if not help.strip() or "\n" in help:
        raise ValueError(f"help must be one non-empty line, got {help!r}")
    metadata: dict[str, Any] = {"help": help.strip()}
    bounds = Range(ge=ge, gt=gt, le=le, lt=lt, also=tuple(also))
    if bounds != Range():
        if _is_number(default) and not bounds.contains(default):
            raise ValueError(f"default {default!r} is outside its range {bounds.text(isinstance(default, int))}")
        metadata["range"] = bounds
    return dataclasses.field(default=default, metadata=metadata)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FieldDoc(typing.NamedTuple):
    """One leaf field of a parameter class, as ``raysearch methods NAME`` prints it."""

    key: str  # dotted name, e.g. gmm.components
    type: str  # int, float, str, bool, str | None
    allowed: str  # the Literal choices, the range (1..64, > 0, [0, 1]) or - when free
    default: Any
    help: str  # one line; empty when the field was not declared with param()
    range: Range | None = None  # the declared range of a number, if any


def _short_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(dict.fromkeys(type(a).__name__ for a in typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " | ".join(_short_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _allowed(tp: Any, f: dataclasses.Field) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    bounds = f.metadata.get("range")
    return bounds.text(integer=tp is int) if bounds is not None else "-"


def describe_fields(cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every leaf field of the dataclass ``cls``, in declaration order, with its metadata.

    Example:
        >>> @dataclass(frozen=True)
        ... class Gmm:
        ...     components: int = param(4, help="Gaussians per rotation", ge=1, le=64)
        ...     covariance: Literal["diag", "fixed"] = param("diag", help="covariance shape")
        >>> [(d.key, d.type, d.allowed, d.default) for d in describe_fields(Gmm, "gmm.")]
        [('gmm.components', 'int', '1..64', 4), ('gmm.covariance', 'str', 'diag | fixed', 'diag')]
    """
    hints = _hints(cls)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(describe_fields(tp, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        help_, bounds = f.metadata.get("help", ""), f.metadata.get("range")
        out.append(FieldDoc(f"{prefix}{f.name}", _short_type(tp), _allowed(tp, f), default, help_, bounds))
    return out


def _check_ranges(obj: Any, hints: Mapping[str, Any], prefix: str) -> None:
    """Refuse a field value outside the range its :func:`param` declared."""
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("range")
        value = getattr(obj, f.name)
        if bounds is None or not _is_number(value) or bounds.contains(value):
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        raise SpecError(f"expected {bounds.expected(integer=hints[f.name] is int)}, got {value!r}", key=where)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise SpecError(f"expected {_type_name(tp)}, got {value!r}", key=key)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, key)
            except SpecError as err:
                errors.append(err)
        raise SpecError(f"expected {_type_name(tp)}, got {value!r}", key=key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"expected {_type_name(tp)}, got {value!r}", key=key)
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise SpecError(f"expected a mapping, got {value!r}", key=key)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise SpecError(f"expected {_type_name(tp)}, got {value!r}", key=key)
        return build(tp, value, prefix=key)
    if tp is type(None):
        if value is None:
            return None
        raise SpecError(f"expected null, got {value!r}", key=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise SpecError(f"expected {_type_name(tp)}, got {value!r}", key=key)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, mapping: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``mapping``, checking keys and types.

    Nested dataclass fields take nested mappings; keys may also be dotted
    (``{"gmm.components": 4}``), which is how specs write method parameters.
    """
    mapping = dict(mapping or {})
    nested: dict[str, dict[str, Any]] = {}
    plain: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, got {key!r}", key=prefix or None)
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            plain[key] = value
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name in [*plain, *nested]:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise SpecError(f"unknown key; allowed keys here: {allowed}", key=where)
    for name, value in plain.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, where)
    for name, sub in nested.items():
        where = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if not dataclasses.is_dataclass(tp):
            raise SpecError(f"is not a section; it takes {_type_name(tp)}", key=where)
        base = kwargs.get(name)
        base_map = to_dict(base) if base is not None else {}
        base_map.update(sub)
        kwargs[name] = build(tp, base_map, prefix=where)
    obj = cls(**kwargs)
    _check_ranges(obj, hints, prefix)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except SpecError as err:
            if prefix and err.key and not err.key.startswith(prefix + "."):
                raise SpecError(err.problem, key=f"{prefix}.{err.key}") from None
            raise
    return obj


def to_dict(obj: Any) -> Any:
    """A plain, YAML-ready structure (tuples become lists) of a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name view of a dataclass tree: ``{"gmm.components": 4, ...}``."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out.update(flatten(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    out[prefix.rstrip(".")] = to_dict(obj)
    return out


def field_paths(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a dataclass class as ``{dotted name: annotation}``."""
    out: dict[str, Any] = {}
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(field_paths(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def override(obj: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    """A copy of the dataclass ``obj`` with dotted ``updates`` applied and checked."""
    if not updates:
        return obj
    current = to_dict(obj)
    for key, value in updates.items():
        node = current
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                where = ".".join(p for p in (prefix, *parts[: i + 1]) if p)
                if part not in node:
                    allowed = ", ".join(sorted(node))
                    raise SpecError(f"unknown key; allowed keys here: {allowed}", key=where)
                raise SpecError("is not a section", key=where)
            node = child
        if parts[-1] not in node:
            where = ".".join(p for p in (prefix, *parts) if p)
            raise SpecError(f"unknown key; allowed keys here: {', '.join(sorted(node))}", key=where)
        node[parts[-1]] = value
    return build(type(obj), current, prefix=prefix)
