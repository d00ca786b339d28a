from fractions import Fraction

import pytest

from machinery.quantity import (BINARY_SI, DECIMAL_EXPONENT, DECIMAL_SI, bytes_value,
                                canonicalize, cpu_millis, format_quantity, parse_quantity,
                                parse_quantity_format)

PARSE = [
    ("0", 0, DECIMAL_SI),
    ("100m", Fraction(1, 10), DECIMAL_SI),
    ("0.5", Fraction(1, 2), DECIMAL_SI),
    (".5", Fraction(1, 2), DECIMAL_SI),
    ("5.", 5, DECIMAL_SI),
    ("1", 1, DECIMAL_SI),
    ("+1", 1, DECIMAL_SI),
    ("-1.5", Fraction(-3, 2), DECIMAL_SI),
    ("1n", Fraction(1, 10**9), DECIMAL_SI),
    ("1u", Fraction(1, 10**6), DECIMAL_SI),
    ("1k", 1000, DECIMAL_SI),
    ("1M", 10**6, DECIMAL_SI),
    ("1G", 10**9, DECIMAL_SI),
    ("1T", 10**12, DECIMAL_SI),
    ("1P", 10**15, DECIMAL_SI),
    ("1E", 10**18, DECIMAL_SI),
    ("500Ki", 500 * 1024, BINARY_SI),
    ("128Mi", 128 * 2**20, BINARY_SI),
    ("1Gi", 2**30, BINARY_SI),
    ("1.5Gi", 3 * 2**29, BINARY_SI),
    ("1Ti", 2**40, BINARY_SI),
    ("1Pi", 2**50, BINARY_SI),
    ("1Ei", 2**60, BINARY_SI),
    ("1e3", 1000, DECIMAL_EXPONENT),
    ("1E3", 1000, DECIMAL_EXPONENT),
    ("1e-3", Fraction(1, 1000), DECIMAL_EXPONENT),
    ("12e+6", 12 * 10**6, DECIMAL_EXPONENT),
    ("0.1m", Fraction(1, 10**4), DECIMAL_SI),
    ("0.1n", Fraction(1, 10**9), DECIMAL_SI),  # rounded up to 1n, as Kubernetes does
    ("-0.1n", Fraction(-1, 10**9), DECIMAL_SI),
    ("0.5Ki", 512, BINARY_SI),
    ("0Mi", 0, BINARY_SI),
    ("0.5Mi", 2**19, BINARY_SI),
    ("0.0001Ki", Fraction(1024, 10**4), DECIMAL_SI),  # sub-unit binary shows as decimal
    ("16Ei", 2**63 - 1, BINARY_SI),  # binary quantities are capped at 2^63-1
    (1, 1, DECIMAL_SI),  # JSON numbers
    (0.25, Fraction(1, 4), DECIMAL_SI),
]


@pytest.mark.parametrize("text,value,fmt", PARSE)
def test_parse(text, value, fmt):
    assert parse_quantity_format(text) == (value, fmt)
    assert isinstance(parse_quantity(text), Fraction)


@pytest.mark.parametrize("text", [
    "", ".", "-", "abc", "1x", "1Kb", "1KiB", "1e", "1 Gi", "1.2.3", "1e3.5", "e3", "Mi", "1mi",
    " 1", "1e99999", True, None,
])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


CANONICAL = [
    ("1.5", "1500m"),
    ("1500m", "1500m"),
    ("2000m", "2"),
    ("0.5", "500m"),
    ("1000", "1k"),
    ("100000", "100k"),
    ("1000000", "1M"),
    ("100m", "100m"),
    ("0.1m", "100u"),
    ("1.5Gi", "1536Mi"),
    ("1024Mi", "1Gi"),
    ("1024", "1024"),  # decimal stays decimal
    ("1Ki", "1Ki"),
    ("1025Ki", "1025Ki"),
    ("0.5Ki", "512"),  # below 1024: written in decimal
    ("1.5Ki", "1536"),
    ("1e3", "1e3"),
    ("1.5e3", "1500"),
    ("1e-3", "1e-3"),
    ("1000e-3", "1"),
    ("-1.5", "-1500m"),
    ("0", "0"),
    ("0Mi", "0"),
    ("1000E", "1000E"),
]


@pytest.mark.parametrize("text,want", CANONICAL)
def test_canonicalize(text, want):
    assert canonicalize(text) == want


FORMAT = [
    (Fraction(1500, 1000), DECIMAL_SI, "1500m"),
    (Fraction(2000, 1000), DECIMAL_SI, "2"),
    (Fraction(250, 1000), DECIMAL_SI, "250m"),
    (134217728, BINARY_SI, "128Mi"),
    (134217728, DECIMAL_SI, "134217728"),
    (1000, BINARY_SI, "1k"),
    (1536, BINARY_SI, "1536"),
    (Fraction(3, 2) * 1024, BINARY_SI, "1536"),
    (2**30 + 1, BINARY_SI, "1073741825"),
    (Fraction(1, 3), DECIMAL_SI, "333333334n"),  # rounded up to nano precision
    (5000, DECIMAL_EXPONENT, "5e3"),
    (0, BINARY_SI, "0"),
]


@pytest.mark.parametrize("value,fmt,want", FORMAT)
def test_format_quantity(value, fmt, want):
    assert format_quantity(value, fmt) == want


@pytest.mark.parametrize("q,millis", [
    ("100m", 100), ("0.5", 500), ("1", 1000), ("2", 2000), ("1n", 1), ("1.0001", 1001),
    ("250m", 250), (Fraction(3, 2), 1500), ("1e-3", 1), ("1k", 1_000_000),
])
def test_cpu_millis(q, millis):
    assert cpu_millis(q) == millis


@pytest.mark.parametrize("q,n", [
    ("128Mi", 134217728), ("1Gi", 1073741824), ("1.5k", 1500), ("100m", 1), ("1", 1),
    ("500Ki", 512000), ("1e3", 1000), (Fraction(1, 2), 1),
])
def test_bytes_value(q, n):
    assert bytes_value(q) == n


@pytest.mark.parametrize("value", [{}, [], {"a": 1}, [1], None, True])
def test_a_value_of_the_wrong_type_is_a_value_error(value):
    # Never a TypeError (unhashable) from the cache behind the parser.
    with pytest.raises(ValueError):
        parse_quantity(value)
