"""Strings from a command line, a recipe or a GUI field turned into typed values (a leaf module)."""
from __future__ import annotations

from typing import Any

from toolkit.errors import UserError


def parse_value(raw: str, typ: Any, key: str) -> Any:
    """Parse a command-line string into the field's declared type."""
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, str)
    if typ is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{key}: expected true/false, got '{raw}'")
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


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """['lr=1e-3', 'family=duo'] -> [('lr', '1e-3'), ('family', 'duo')]."""
    pairs = []
    for a in args:
        if "=" not in a or a.startswith("="):
            raise UserError(f"expected key=value, got '{a}'")
        k, v = a.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    return pairs


def parse_options(pairs: list[str], flag: str = "--option") -> dict[str, str]:
    """Repeated `KEY=VALUE` flags (e.g. `--option greedy_tail=false`) as a dict of strings."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UserError(f"{flag} expects KEY=VALUE (got '{p}')")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out
