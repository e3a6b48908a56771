"""The one way to declare an option, and the one KEY=VALUE parser (a leaf module).

Every user-settable option (the run config's sections, a family's training and sampling options,
a decoding strategy's options) is a field of a dataclass declared with `option(default, help,
choices)`; its type is the field's annotation (`float | None` where None means "the model's own
value"). From that one declaration come:
- `describe(cls)`: name, type, default, choices and help, for `--help` texts and the GUI's controls;
- `coerce(raw, typ, key)`: a command-line, recipe or GUI string turned into the declared type;
- `build(cls, values, owner)`: typed options from a dict, an unknown name a one-line UserError;
- `check(obj)`: "NAME must be one of A, B (got 'X')" from `choices`, then the class's own
  `validate()` for what relates several fields.
`require_range` and `check_seed` are the one bounds check and the one seed check of every front end.
`parse_pairs` / `parse_spec` read `KEY=VALUE` lists (argv items, or text with commas or spaces
and shell-style quotes) the same way in every front end.
"""
from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable

from toolkit.errors import UserError


def option(default: Any, help: str = "", choices: Iterable | None = None) -> Any:
    """A dataclass field declaring an option: its default, its help text and (for a closed set of
    values) its choices, which `check` enforces and the CLI help and the GUI show."""
    return dataclasses.field(default=default, metadata={"help": help,
                                                        "choices": None if choices is None else tuple(choices)})


@dataclass
class NoOptions:
    """The options of something that has none (a family, a sampling process or a strategy)."""


@dataclass(frozen=True)
class Spec:
    """One declared option, as `describe` reads it."""
    name: str
    type: type          # int, float, bool or str (Optional unwrapped)
    default: Any
    help: str = ""
    choices: tuple | None = None
    optional: bool = False   # declared `X | None`: None means the model's own value

    def help_text(self) -> str:
        """The help with the choices, as --help prints it."""
        listed = f"[{' | '.join(map(str, self.choices))}]" if self.choices else ""
        return " ".join(p for p in (self.help, listed) if p)


def _unwrap(typ) -> tuple[Any, bool]:
    """(X, True) for `X | None` / Optional[X]; (typ, False) otherwise."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return typ, False


def describe(cls) -> list[Spec]:
    """The declared options of a dataclass (or of an instance's class), in declaration order."""
    cls = cls if isinstance(cls, type) else type(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        typ, optional = _unwrap(hints.get(f.name, f.type))
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Spec(f.name, typ, default, f.metadata.get("help", ""), f.metadata.get("choices"), optional))
    return out


def coerce(raw: Any, typ: Any, key: str) -> Any:
    """A value in the declared type: strings (command line, recipe, GUI) are parsed, numbers checked
    (an int option refuses 2.5); anything else is returned as given."""
    typ, _ = _unwrap(typ)
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, str)
    if not isinstance(raw, str):
        if typ in (int, float) and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            if typ is int and raw != int(raw):
                raise UserError(f"{key}: expected int, got {raw}")
            return typ(raw)
        return raw
    if typ is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{key}: expected true/false, got '{raw}'")
    if typ is int:
        try:
            return int(raw)     # exact, however long (float() would round 99999999999999999999)
        except ValueError:
            pass                # '1e3', '2.0': read as a number below
    if typ in (int, float):
        try:
            v = float(raw)
            if typ is int:
                if v != int(v):
                    raise ValueError
                return int(v)
            return v
        except (ValueError, OverflowError):   # OverflowError: int('inf')
            raise UserError(f"{key}: expected {typ.__name__}, got '{raw}'") from None
    return raw


def require_choice(name: str, value: Any, choices: Iterable) -> None:
    """The one "NAME must be one of A, B (got 'X')" UserError (a declared option's, or an argument's)."""
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))} (got '{value}')")


def require_range(name: str, value: Any, low, high, unit: str = "", low_open: bool = False) -> None:
    """The one "NAME must be between LOW and HIGH (got X)" UserError: every front end (CLI, app, API)
    refuses an out-of-range number with it instead of clamping it silently. NaN is refused too."""
    inside = (low < value if low_open else low <= value) and value <= high   # False for NaN
    if not inside:
        span = f"in ({low}, {high}]" if low_open else f"between {low} and {high}"
        raise UserError(f"{name} must be {span}{unit} (got {value})")


MAX_SEED = 2 ** 63 - 1     # torch seeds are signed 64-bit


def check_seed(seed: Any, name: str = "seed") -> int:
    """The one seed check of every command, the app and the trainer: a whole number in 0..2**63 - 1
    (torch refuses larger ones with a bare OverflowError deep inside sampling)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{name} must be a whole number between 0 and 2**63 - 1 (got {seed})")
    return seed


def seed_argument(text: str) -> int:
    """argparse `type=` for --seed: the same check (an error here is the CLI's one-line message)."""
    try:
        value = int(text)
    except ValueError:
        value = text     # refused below, quoted in the message
    return check_seed(value)


def check(obj, where: str = "") -> None:
    """Raise the one-line UserError for a value outside its declared choices (`where` prefixes the
    name, e.g. 'duo sampling option '), then run the class's own `validate()` if it has one."""
    for spec in describe(obj):
        value = getattr(obj, spec.name)
        if spec.choices is None or (value is None and spec.optional):
            continue
        shown = str(value).lower() if isinstance(value, bool) and spec.type is str else value   # old configs: True
        require_choice(f"{where}{spec.name}", shown, spec.choices)
    own = getattr(obj, "validate", None)
    if own is not None:
        own()


def build(cls, values: dict, owner: str, defaults: dict | None = None, noun: str = "option", where: str = ""):
    """`cls` filled from `values` (strings parsed by declared type) over `defaults`, then checked
    (`check(obj, where)`); a name `cls` does not declare is a UserError naming `owner` and `noun`."""
    specs = {s.name: s for s in describe(cls)}
    out = dict(defaults or {})
    for k, v in values.items():
        if k not in specs:
            raise UserError(f"{owner} has no {noun} '{k}' (known: {', '.join(sorted(specs)) or 'none'})")
        out[k] = coerce(v, specs[k].type, k)
    obj = cls(**out)
    check(obj, where)
    return obj


# -- the one KEY=VALUE parser ------------------------------------------------------------------
def parse_pair(item: str, what: str = "option") -> tuple[str, str]:
    """'lr=1e-3' -> ('lr', '1e-3'); no '=' or an empty key is a UserError naming `what`."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{what} expects KEY=VALUE (got '{item}')")
    return key.strip(), value.strip()


def split_items(text: str, what: str = "option") -> list[str]:
    """'k=4, threshold=0.9' or 'k=4 prompt="a, b"' -> the items, split at commas or spaces outside quotes."""
    lex = shlex.shlex(text, posix=True)
    lex.whitespace, lex.whitespace_split, lex.commenters = " \t\r\n,", True, ""
    try:
        return list(lex)
    except ValueError as e:   # an unclosed quote
        raise UserError(f"{what}: {e} in '{text}'") from None


def parse_overrides(items: Iterable[str], what: str = "option") -> list[tuple[str, str]]:
    """Ordered (key, value) pairs of KEY=VALUE items (a key may repeat: the last one wins later)."""
    return [parse_pair(item, what) for item in items]


def parse_pairs(items: str | Iterable[str] | dict | None, what: str = "option") -> dict[str, str]:
    """KEY=VALUE items (a list, or one text split by `split_items`), or already a dict, as a dict."""
    if isinstance(items, dict):
        return dict(items)
    if not isinstance(items, (list, tuple)):
        items = split_items(str(items or ""), what)
    return dict(parse_overrides(items, what))


def parse_spec(spec: str, what: str = "--sampler") -> tuple[str, dict[str, str]]:
    """'confidence:k=4,top_k=50' -> ('confidence', {'k': '4', 'top_k': '50'}): a name and its options."""
    name, _, inline = spec.partition(":")
    try:
        return name.strip(), parse_pairs(inline, what)
    except UserError:
        raise UserError(f"{what} expects NAME or NAME:KEY=VALUE,... (got '{spec}')") from None
