"""Settings declared once: each key's type, default, allowed values and help in one place.

A settings dataclass (`DepthSettings`, `ModelSettings`, the config's sections) declares
each field with `setting(...)`: `dataclasses.field` carrying a `Spec` in its metadata.
`schema(cls)` reads them back, the kind taken from the field's type, and everything else
is derived from it rather than written again: the checks of a config section, a sidecar
or a browser's values (type, range, choices, "did you mean"), the `predict` and `compare`
flags, the viewer's controls and the key table in docs/configuration.md. Adding a key is
then one declaration plus the code that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "str", "path", "names"]
_KINDS: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str: "str", Path: "path",
                           tuple[str, ...]: "names"}
_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Slider:
    """The viewer's slider for a number: the values a photographer plausibly wants, not
    every valid one."""

    label: str
    low: float
    high: float
    step: float
    unset: str | None = None
    """For a key that may be left unset (None): the label of the checkbox that unsets it."""


@dataclass(frozen=True)
class Choice:
    """The viewer's drop-down list of the key's choices."""

    label: str


@dataclass(frozen=True)
class Spec:
    """What a key accepts and means, beyond its type and default."""

    help: str
    """One line: what the key does; shown by `--help`, the viewer and the docs."""
    low: float | None = None
    """Smallest allowed value (inclusive unless `low_open`)."""
    high: float | None = None
    """Largest allowed value (inclusive)."""
    low_open: bool = False
    choices: tuple[str, ...] = ()
    """The allowed values of text, or of each item of a list of names."""
    ignore_case: bool = False
    item: str = "name"
    """What one item of a list of names is called in messages ("depth source")."""
    note: str = ""
    """The unit or a reminder, shown after the range or choices: "metres", "1 = ratio
    mode", "any letter case"."""
    default_text: str | None = None
    """The default in words, for the docs, where it is computed (a per-user folder)."""
    control: Slider | Choice | None = None
    """How the viewer offers the key; None: it does not."""
    flag: str | None = None
    """The command-line flag's name if not the key's (`--sources` for `compare`)."""
    single: bool = False
    """For a list of names: one name alone (`"cpu"`) stands for the list of it."""
    repeats: bool = False
    """For a list of names: a name may be listed more than once."""
    later: bool = False
    """A per-photo key added after the first release: left out of a photo's job key while
    it has its default, so photos done before it existed keep their keys (not redone)."""


def setting(default: Any = _MISSING, *, help: str, default_factory: Callable[[], Any] = _MISSING,
            low: float | None = None, high: float | None = None, low_open: bool = False,
            choices: tuple[str, ...] = (), ignore_case: bool = False, item: str = "name",
            note: str = "", default_text: str | None = None,
            control: Slider | Choice | None = None, flag: str | None = None,
            single: bool = False, repeats: bool = False, later: bool = False) -> Any:
    """A dataclass field declared with its `Spec` (see the module's docstring)."""
    spec = Spec(help, low, high, low_open, choices, ignore_case, item, note, default_text,
                control, flag, single, repeats, later)
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"spec": spec})
    return dataclasses.field(default=default, metadata={"spec": spec})


def nearest(name: object, valid: Iterable[str]) -> str | None:
    """The valid name a mistyped `name` most likely meant, if any is close."""
    match = (difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
             if isinstance(name, str) else [])
    return match[0] if match else None


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the valid name a mistyped `name` probably meant, else ''."""
    hint = nearest(name, valid)
    return f"; did you mean {hint!r}?" if hint else ""


def key_hint(key: str, valid: Iterable[str]) -> str:
    """The nearest valid key for an unknown one, else the list of valid keys."""
    valid = list(valid)
    return did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"


def shown(value: object) -> str:
    """A value for a message, cut short: sidecars and command lines can hold anything."""
    if isinstance(value, str):  # cut inside the quotes, so it still reads as text
        return repr(value if len(value) <= 50 else value[:47] + "...")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml(value: object) -> str:
    """A default as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _number(value: object, kind: Kind) -> bool:
    """A finite number of `kind` (an int for "int"; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int":
        return isinstance(value, int)
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class Setting:
    """One declared key: its name, kind (from the field's type), whether it may be unset
    (None), and its spec."""

    name: str
    kind: Kind
    optional: bool
    spec: Spec
    field: dataclasses.Field[Any]

    def default(self) -> Any:
        """The default value (a fresh one where a factory makes it)."""
        factory: Any = self.field.default_factory
        return self.field.default if factory is _MISSING else factory()

    def shown_default(self) -> str:
        """The default as a config file writes it (`1.0`, `"auto"`, `["ply"]`, `true`),
        `""` for a path or text left unset, else "unset"; or the spec's words for it."""
        if self.spec.default_text is not None:
            return self.spec.default_text
        value = self.default()
        if value is None:
            return '""' if self.kind in ("path", "str") else "unset"
        return _toml(value)

    @property
    def flag(self) -> str:
        """The command-line flag: `--depth-scale` for `depth_scale`."""
        return "--" + (self.spec.flag or self.name).replace("_", "-")

    def allowed(self) -> str:
        """The range or the choices in words ('> 0', 'in 1..100 (1 = ratio mode)'), or ''."""
        s = self.spec
        if s.choices:
            text = f"{'any' if self.kind == 'names' else 'one'} of {', '.join(s.choices)}"
        elif s.low is not None and s.high is not None:
            text = f"in {s.low:g}..{s.high:g}"
        elif s.low is not None:
            text = f"{'>' if s.low_open else '>='} {s.low:g}"
        elif s.high is not None:
            text = f"<= {s.high:g}"
        else:
            text = ""
        return f"{text} ({s.note})".strip() if s.note else text

    def coerce(self, value: Any) -> Any:
        """A value read from TOML or JSON as this key's type; raises TypeError saying what
        it must be. Ints pass as floats, bools never pass as numbers, text is kept as text
        (a path is resolved by the caller, against the file that named it)."""
        kind = self.kind
        if kind == "bool" and not isinstance(value, bool):
            raise TypeError(f"must be true or false, got {shown(value)}")
        if kind == "int" and not _number(value, "int"):
            raise TypeError(f"must be a whole number, got {shown(value)}")
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"must be a number, got {shown(value)}")
            if not _number(value, "float"):
                raise TypeError(f"must be a finite number, got {shown(value)}")
            return float(value)
        if kind == "names":
            if isinstance(value, str) and self.spec.single:
                return (value,)
            if (not isinstance(value, (list, tuple))
                    or not all(isinstance(item, str) for item in value)):
                raise TypeError(f"must be a list of {self.spec.item} names, got {shown(value)}")
            return tuple(value)
        if kind in ("str", "path") and not isinstance(value, str):
            raise TypeError(f"must be a string, got {shown(value)}")
        return value

    def problems(self, value: Any) -> list[str]:
        """What is wrong with `value` as this key's value, each naming the key; [] if fine."""
        name, s = self.name, self.spec
        if value is None and self.optional:
            return []
        if self.kind == "bool" and not isinstance(value, bool):
            return [f"{name} must be true or false, got {shown(value)}"]
        if self.kind in ("int", "float"):
            number = _number(value, self.kind) and (
                s.low is None or (value > s.low if s.low_open else value >= s.low)) and (
                s.high is None or value <= s.high)
            what = " ".join(filter(None, ("a whole number" if self.kind == "int"
                                          else "a finite number", self.allowed())))
            return [] if number else [f"{name} must be {what}, got {shown(value)}"]
        if self.kind == "names":
            return self._name_problems(value)
        if self.kind == "path" and not isinstance(value, (str, Path)):
            return [f"{name} must be a path, got {shown(value)}"]
        if self.kind == "str" and s.choices:
            folded = value.upper() if s.ignore_case and isinstance(value, str) else value
            if folded not in s.choices:
                return [f"{name} must be one of {', '.join(s.choices)}, got {shown(value)}"
                        f"{did_you_mean(folded, s.choices)}"]
        elif self.kind == "str" and not isinstance(value, str):
            return [f"{name} must be a string, got {shown(value)}"]
        return []

    def _name_problems(self, value: Any) -> list[str]:
        name, s = self.name, self.spec
        if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
            return [f"{name} must be a list of {s.item} names, got {shown(value)}"]
        unknown = [f"{name}: unknown {s.item} {shown(item)}{did_you_mean(item, s.choices)} "
                   f"({s.item}s: {', '.join(s.choices)})"
                   for item in value if s.choices and item not in s.choices]
        if unknown:
            return unknown
        repeated = [] if s.repeats else sorted({item for item in value if value.count(item) > 1})
        return [f"{name} lists {', '.join(repeated)} more than once"] if repeated else []


def _kind(hint: Any) -> tuple[Kind, bool]:
    """The kind of a field's type, and whether it may be None (`float | None`)."""
    args = typing.get_args(hint)
    optional = type(None) in args and typing.get_origin(hint) is not tuple
    if optional:
        (hint,) = [arg for arg in args if arg is not type(None)]
    return _KINDS[hint], optional


@functools.cache
def schema(cls: type) -> tuple[Setting, ...]:
    """The declared keys of settings dataclass `cls`, in declaration order (fields made
    without `setting()` are not keys)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is not None:
            out.append(Setting(f.name, *_kind(hints[f.name]), spec, f))
    return tuple(out)


def keys(cls: type) -> dict[str, Setting]:
    """`schema(cls)` by key name."""
    return {s.name: s for s in schema(cls)}


def problems(values: Any) -> list[str]:
    """Every declared key of a settings dataclass instance whose value is not allowed."""
    return [problem for key in schema(values.__class__)
            for problem in key.problems(getattr(values, key.name))]


class Checked:
    """Base of a settings dataclass whose values are checked against their declarations
    when it is made, so no code downstream sees a value out of range."""

    def __post_init__(self) -> None:
        found = problems(self)
        if found:
            raise ValueError("; ".join(found))
