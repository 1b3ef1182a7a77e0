"""The CSV side inputs of an ingestion: the joint lookup (model joints <- data keypoints)
and per-session shape betas."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from smilfit.body_models.joint_lookup import JointLookupError, read_joint_lookup
from .options import DataIngestError, PathLike, _fail


def _read_csv_rows(path: Path) -> List[List[str]]:
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(path, f'cannot read CSV ({e})') from e
    return [r for r in rows if any(r) and not r[0].startswith('#')]


def load_joint_lookup(path: PathLike) -> List[Tuple[str, str]]:
    """:func:`smilfit.body_models.joint_lookup.read_joint_lookup`, its errors as
    :class:`DataIngestError`."""
    try:
        return read_joint_lookup(path)
    except (JointLookupError, FileNotFoundError) as e:
        raise DataIngestError(str(e)) from None


def load_shape_betas(path: PathLike) -> Dict[str, np.ndarray]:
    """Read ``session,beta_0,beta_1,...`` rows (optional header) into session -> (B,) betas."""
    path = Path(path)
    rows = _read_csv_rows(path)
    out: Dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        try:
            values = np.array([float(v) for v in row[1:]], dtype=np.float32)
        except ValueError:
            if i == 0:
                continue  # header
            raise _fail(path, f'row {i + 1}: betas must be numbers: {row}') from None
        if values.size == 0:
            raise _fail(path, f'row {i + 1}: no betas for session {row[0]!r}')
        out[row[0]] = values
    if not out:
        raise _fail(path, 'no sessions in the betas table')
    sizes = {v.size for v in out.values()}
    if len(sizes) != 1:
        raise _fail(path, f'rows have different numbers of betas: {sorted(sizes)}')
    return out
