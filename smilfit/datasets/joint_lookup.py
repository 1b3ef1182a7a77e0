"""Joint lookups: which model joint (or keypoint) each data keypoint is.

A lookup is a two-column CSV ``model_joint,data_keypoint`` (an optional header row whose
first cell is ``model_joint``/``joint``/``model``; ``#`` comment rows) or, in a config, a
dict ``{model_joint: data_keypoint}``. An empty data name keeps the model point unmatched
(an always-missing keypoint at ingestion). Names are checked against the model and the data
where they are used (:func:`smilfit.handlers.matching.match_keypoints`).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['JointLookupError', 'read_joint_lookup', 'joint_lookup_dict']

_HEADERS = ('model_joint', 'joint', 'model', 'model_joint_name')


class JointLookupError(ValueError):
    """A joint lookup file cannot be read; the message names the file and the row."""


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
