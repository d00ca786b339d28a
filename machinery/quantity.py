"""Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1e3`), exact arithmetic.

Guarantees:
- `parse_quantity` accepts Kubernetes' grammar (api/resource/quantity.go):
  `[+-]<digits>[.<digits>]<suffix>` with suffixes n u m "" k M G T P E (decimal),
  Ki Mi Gi Ti Pi Ei (binary) or e<int>/E<int> (exponent), and returns an exact
  `Fraction`; no float is ever involved. As Kubernetes does, a non-zero value finer
  than 1n is rounded up (away from zero) to 1n, and binary quantities are capped at
  2^63-1. Malformed input raises ValueError with the offending text.
- `format_quantity` produces Kubernetes' canonical form: the largest suffix that loses
  no precision and leaves no fraction (1.5 -> "1500m", 2 -> "2", 1.5Gi -> "1536Mi").
- `canonicalize(s)` round-trips a string the way the API server re-serialises it,
  keeping the format family (decimal SI, binary SI, exponent) of the input.
- Pure functions: no I/O, no shared state; safe from any thread or task.
"""
from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"

_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIX = {e: s for s, e in _DECIMAL.items()}
_BINARY_SUFFIXES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_RE = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[+-]?[0-9]*)")
_NANO = 10 ** 9
_MAX = 2 ** 63 - 1
# Kubernetes reads any int64 exponent; a bound keeps "1e999999999" from eating memory.
_MAX_EXPONENT = 1000

Number = Fraction | int | str


def parse_quantity_format(s: str | int | float) -> tuple[Fraction, str]:
    """Parse a quantity; return its exact value and format family. ValueError for anything
    that is not one, whatever its type: a JSON body may hold an object or a list here."""
    if isinstance(s, bool) or not isinstance(s, (str, int, float)):
        raise ValueError(f"quantity must be a string or a number, not {type(s).__name__}")
    return _parse_quantity_format(s)


@functools.lru_cache(maxsize=4096, typed=True)
def _parse_quantity_format(s: str | int | float) -> tuple[Fraction, str]:
    # Cached: the same few quantities ("100m", "128Mi") recur in every pod, and Fractions
    # are immutable. Only hashable types reach it (see parse_quantity_format).
    text = s if isinstance(s, str) else repr(s)
    m = _RE.fullmatch(text)
    if not m or not (m.group(2) or m.group(3)):
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}")
    sign, whole, frac, suffix = m.groups()
    frac = frac or ""
    if suffix in _DECIMAL:
        base, exp, fmt = 10, _DECIMAL[suffix], DECIMAL_SI
    elif suffix in _BINARY:
        base, exp, fmt = 2, _BINARY[suffix], BINARY_SI
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        base, exp, fmt = 10, int(suffix[1:]), DECIMAL_EXPONENT
        if abs(exp) > _MAX_EXPONENT:
            raise ValueError(f"quantity exponent out of range: {text!r}")
    else:
        raise ValueError(f"unable to parse quantity's suffix: {text!r}")
    value = Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
    value *= Fraction(base) ** exp
    if value:
        value = Fraction(math.ceil(value * _NANO), _NANO)
    if fmt == BINARY_SI:
        value = min(value, Fraction(_MAX))
        if 0 < value < 1:
            fmt = DECIMAL_SI  # Kubernetes: a sub-unit binary quantity is shown in decimal
    return (-value if sign == "-" else value), fmt


def parse_quantity(s: str | int | float) -> Fraction:
    """Exact value of a quantity string (or JSON number); ValueError if malformed."""
    return parse_quantity_format(s)[0]


def _value(q: Number) -> Fraction:
    return parse_quantity(q) if isinstance(q, str) else Fraction(q)


def cpu_millis(q: Number) -> int:
    """Milli-units, rounded up: '100m' -> 100, '0.5' -> 500, '1n' -> 1."""
    return math.ceil(_value(q) * 1000)


def bytes_value(q: Number) -> int:
    """Whole units, rounded up: '128Mi' -> 134217728, '1.5k' -> 1500, '100m' -> 1."""
    return math.ceil(_value(q))


def format_quantity(value: Number, fmt: str = DECIMAL_SI) -> str:
    """Canonical string for a value in a format family (see module docstring).

    Decimal values are first rounded up to nano precision. A BINARY_SI value that is
    fractional or below 1024 in magnitude is written in decimal, as Kubernetes does.
    """
    v = _value(value)
    if v == 0:
        return "0"
    sign, v = ("-" if v < 0 else ""), abs(v)
    if fmt == BINARY_SI and v >= 1024 and v.denominator == 1:
        n, e = int(v), 0
        while n % 1024 == 0 and e < len(_BINARY_SUFFIXES) - 1:
            n, e = n // 1024, e + 1
        return f"{sign}{n}{_BINARY_SUFFIXES[e]}"
    mantissa, exp = math.ceil(v * _NANO), -9
    while mantissa % 10 == 0:
        mantissa, exp = mantissa // 10, exp + 1
    while exp % 3:
        mantissa, exp = mantissa * 10, exp - 1
    if fmt == DECIMAL_EXPONENT:
        return f"{sign}{mantissa}" + (f"e{exp}" if exp else "")
    if exp > 18:  # beyond "E": grow the mantissa rather than invent a suffix
        mantissa, exp = mantissa * 10 ** (exp - 18), 18
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exp]}"


def canonicalize(s: str | int | float) -> str:
    """The API server's serialisation of a quantity: '0.5' -> '500m', '1.5Gi' -> '1536Mi'."""
    value, fmt = parse_quantity_format(s)
    return format_quantity(value, fmt)
