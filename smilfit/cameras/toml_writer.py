"""A small TOML emitter for calibration files (the standard library only reads TOML).

Writes what :mod:`tomllib` reads back identically: strings, booleans, integers, floats
(Python's shortest round-trip ``repr``, so every float64 survives exactly, ``inf``/``nan``
included), dates and times, arrays (nested freely, dicts inside arrays become inline
tables) and tables (nested dicts become ``[a.b]`` sub-tables). numpy scalars and arrays
are accepted. ``None`` has no TOML spelling and raises ``TypeError`` naming the key.

The output keeps to the TOML subset that older readers (the ``toml`` package that anipose
uses, TOML 0.5) also accept, provided arrays do not mix types.

Why not ``tomli-w``: on every anipose/aniposelib calibration and config file of the team's
test data both read back to the same data, but tomli-w writes one number per line (a 4-camera
calibration: 2066 characters against 1378 here, matrices unreadable at a glance), takes no
numpy values (every caller would convert) and adds a dependency; this module is 100 lines
with its own tests.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any, List, Mapping

import numpy as np

_BARE_KEY = re.compile(r'^[A-Za-z0-9_-]+$')
_ESCAPES = {'\\': '\\\\', '"': '\\"', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\f': '\\f',
            '\r': '\\r'}


def toml_string(s: str) -> str:
    """A TOML basic string (double quotes, control characters escaped)."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f'\\u{ord(ch):04X}')
        else:
            out.append(ch)
    return '"' + ''.join(out) + '"'


def toml_key(key: Any, where: str = '') -> str:
    """A bare key where TOML allows one, else a quoted key."""
    if not isinstance(key, str):
        raise TypeError(f'TOML keys must be strings, got {key!r} at {where or "top level"}')
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_float(x: float) -> str:
    """Shortest text that parses back to the same float64 (``inf``, ``-inf``, ``nan`` too)."""
    x = float(x)
    if math.isnan(x):
        return 'nan'
    if math.isinf(x):
        return 'inf' if x > 0 else '-inf'
    text = repr(x)
    return text if any(c in text for c in '.en') else text + '.0'


def toml_value(value: Any, where: str) -> str:
    """Inline TOML for one value (``where`` names it in error messages)."""
    if isinstance(value, (bool, np.bool_)):
        return 'true' if value else 'false'
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return toml_float(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = [toml_value(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return '[' + ', '.join(items) + ']'
    if isinstance(value, Mapping):
        items = [f'{toml_key(k, where)} = {toml_value(v, f"{where}.{k}")}'
                 for k, v in value.items()]
        return '{' + ', '.join(items) + '}'
    raise TypeError(f'cannot write {where} = {value!r} ({type(value).__name__}) as TOML')


def _emit_table(lines: List[str], path: List[str], table: Mapping, where: str) -> None:
    if path:
        if lines:
            lines.append('')
        lines.append('[' + '.'.join(toml_key(p, where) for p in path) + ']')
    for key, value in table.items():
        if not isinstance(value, Mapping):
            lines.append(f'{toml_key(key, where)} = '
                         f'{toml_value(value, f"{where}.{key}" if where else key)}')
    for key, value in table.items():
        if isinstance(value, Mapping):
            _emit_table(lines, path + [key], value, f'{where}.{key}' if where else key)


def dumps_toml(document: Mapping) -> str:
    """Serialise a mapping as a TOML document (nested mappings become tables).

    Args:
        document: the document, e.g. ``{'cam_0': {...}, 'metadata': {...}}``.

    Returns:
        The TOML text, ending with a newline.

    Raises:
        TypeError: a key is not a string or a value has no TOML form (``None``, objects).
    """
    lines: List[str] = []
    _emit_table(lines, [], document, '')
    return '\n'.join(lines) + '\n'


__all__ = ['dumps_toml', 'toml_string', 'toml_key', 'toml_float', 'toml_value']
