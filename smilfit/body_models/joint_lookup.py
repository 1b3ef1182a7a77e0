"""Joint lookups: which model joint (or keypoint) each data keypoint is.

A lookup is a two-column CSV ``model_joint,data_keypoint`` (an optional header row whose
first cell is ``model_joint``/``joint``/``model``; ``#`` comment rows) or, in a config, a
dict ``{model_joint: data_keypoint}``. An empty data name keeps the model point unmatched
(an always-missing keypoint at ingestion).

Reading (:func:`read_joint_lookup`, :func:`joint_lookup_dict`) and checking
(:func:`check_joint_lookup`) live here, for every user of a lookup: SLEAP ingestion
(``--joint-lookup``), the fit tool (``data.joint_lookup``), keypoint handlers and regressors
(through :func:`smilfit.body_models.keypoint_naming.match_keypoints`). A name that is in neither the
model nor the data is an error, never a silently dropped keypoint.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['JointLookupError', 'read_joint_lookup', 'joint_lookup_dict',
           'check_joint_lookup']

_HEADERS = ('model_joint', 'joint', 'model', 'model_joint_name')


class JointLookupError(ValueError):
    """A joint lookup cannot be read or names points that do not exist; the message names
    the file and row, or the entries at fault and the names that do exist."""


def read_joint_lookup(path: PathLike) -> List[Tuple[str, str]]:
    """The (model joint, data keypoint) pairs of a lookup CSV, in file order.

    Raises:
        FileNotFoundError: no such file.
        JointLookupError: unreadable, a row without a model name or with more than two
            cells, no rows, or a model joint listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'joint lookup {path} does not exist')
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise JointLookupError(f'{path}: cannot read CSV ({e})') from e
    rows = [r for r in rows if any(r) and not r[0].startswith('#')]
    if rows and rows[0][0].lower() in _HEADERS:
        rows = rows[1:]
    pairs = []
    for i, row in enumerate(rows):
        if len(row) > 2 or not row[0]:
            raise JointLookupError(f'{path}: row {i + 1} {row}: expected '
                                   '"model_joint,data_keypoint"')
        pairs.append((row[0], row[1] if len(row) > 1 else ''))
    if not pairs:
        raise JointLookupError(f'{path}: no joints in the lookup table')
    names = [p[0] for p in pairs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise JointLookupError(f'{path}: model joints listed twice: {dup}')
    return pairs


def joint_lookup_dict(spec: Union[None, PathLike, Mapping[str, Optional[str]]]
                      ) -> Optional[Dict[str, str]]:
    """A lookup as ``{model joint: data keypoint}`` from a config value: ``None``, a dict
    or a CSV path (see :func:`read_joint_lookup`)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return {str(k): '' if v is None else str(v) for k, v in spec.items()}
    return dict(read_joint_lookup(spec))


def _closest(name: str, candidates: Sequence[str]) -> Optional[str]:
    """The candidate most like ``name`` (case-insensitive), if any is close."""
    import difflib
    lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return lower[close[0]] if close else None


def check_joint_lookup(lookup: Mapping[str, Optional[str]], model_names: Sequence[str],
                       data_names: Sequence[str], origin: str = 'joint_lookup') -> None:
    """Check that every entry of a lookup names existing points on both sides.

    An entry ``model -> data`` is at fault when ``model`` is none of ``model_names`` or
    ``data`` (when not empty: empty keeps the model point unmatched) is none of
    ``data_names``. A typo on either side would otherwise drop the keypoint silently (or
    leave a fit with too few points to be solved).

    Args:
        lookup: ``{model name: data name}``.
        model_names: every name the lookup may use on the model side: the body model's
            joint and keypoint names (a lookup is shared by handlers reading either).
        data_names: the dataset's keypoint names.
        origin: what the lookup is, for the message (e.g. a file or config key).

    Raises:
        JointLookupError: one line per faulty entry (``m -> d (did you mean 'x'?)`` for a
            data name, ``m -> d: no model joint or keypoint 'm'`` for a model name,
            ``m -> d: neither name exists``), the closest existing names, and both lists
            of existing names.
    """
    models, datas = set(map(str, model_names)), set(map(str, data_names))
    bad = []
    for m, d in lookup.items():
        m, d = str(m), '' if d is None else str(d)
        model_ok, data_ok = m in models, d == '' or d in datas
        if model_ok and data_ok:
            continue
        if model_ok:
            close = _closest(d, data_names)
            bad.append(f'{m} -> {d}' + (f" (did you mean '{close}'?)" if close else ''))
        elif data_ok:
            close = _closest(m, model_names)
            bad.append(f"{m} -> {d}: no model joint or keypoint '{m}'"
                       + (f" (did you mean '{close}'?)" if close else ''))
        else:
            close = _closest(m, model_names)
            bad.append(f'{m} -> {d}: neither name exists'
                       + (f" (model name '{close}'?)" if close else ''))
    if bad:
        raise JointLookupError(
            f"{origin} names points that do not exist: {'; '.join(bad)}. Data keypoints: "
            f"{list(data_names)}; model joints and keypoints: {list(model_names)}. Leave the "
            "data name empty to keep a model point unmatched")
