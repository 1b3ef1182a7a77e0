"""What a dataset fit is told and what it refuses: the errors of a dataset fit, the
``data`` dict of a fitting config (:data:`DATA_KEYS`, :func:`check_data_config`), the joint
lookup, the registrant config a fit builds and records (:func:`registrant_config`), and
the stamp that decides whether finished batches can be resumed (:func:`dataset_identity`,
:func:`code_identity`, :func:`stamp_changes`)."""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import numpy as np

from smilfit.body_models.joint_lookup import joint_lookup_dict
from smilfit.datasets.provenance import read_source

from ..animals import DEFAULT_SKELETON_FRAMES

PathLike = Union[str, os.PathLike]

#: Keys of the fitting config's ``data`` dict (see :func:`~.dataset_fit.fit_dataset`).
DATA_KEYS = ('path', 'batch_size', 'max_samples', 'joint_lookup', 'save_vertices', 'sleap',
             'synthetic', 'views', 'exclude_views', 'skeleton_frames', 'skeleton', 'init_from',
             'overlap')


class FittingConfigError(ValueError):
    """The fitting config is missing something; the message says what."""


class StaleDataError(ValueError):
    """``data.path`` exists but holds other data than the config's source describes."""


class AllSamplesFailedError(ValueError):
    """Every sample of a dataset fit failed; a run with some good samples only warns."""


#: The joint lookup of a config (``None``, a dict or a CSV path) as a dict; kept under this
#: name for old imports.
load_joint_lookup = joint_lookup_dict


def check_data_config(data: Any) -> Dict[str, Any]:
    """The fitting config's ``data`` dict, checked: a path, and no unknown keys.

    Raises:
        FittingConfigError: no ``data.path``, or a key not in :data:`DATA_KEYS` (the
            message names it, suggests the closest key and lists the allowed ones).
    """
    data_cfg = dict(data or {})
    for key in data_cfg:
        if key not in DATA_KEYS:
            close = difflib.get_close_matches(key, DATA_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            raise FittingConfigError(f"unknown key data.{key}{hint}; data takes "
                                     f"{', '.join(DATA_KEYS)}")
    if 'path' not in data_cfg:
        raise FittingConfigError("the config needs data = dict(path='dataset.h5', ...)")
    frames = data_cfg.get('skeleton_frames', DEFAULT_SKELETON_FRAMES)
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise FittingConfigError(f'data.skeleton_frames must be an integer >= 1 (frames per '
                                 f'animal its skeleton is estimated from), got {frames!r}')
    overlap = data_cfg.get('overlap')
    if overlap is not None and (isinstance(overlap, bool)
                                or not isinstance(overlap, (int, np.integer)) or overlap < 0):
        raise FittingConfigError(f'data.overlap must be an integer >= 0 (samples fitted again '
                                 f'on each side of a batch) or None, got {overlap!r}')
    return data_cfg


def dataset_identity(path: PathLike) -> Dict[str, Any]:
    """What identifies a dataset file's content for resuming: its resolved path, size,
    modification time and recorded source (:mod:`smilfit.datasets.provenance`)."""
    path = Path(path).resolve()
    st = path.stat()
    return dict(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                source=read_source(path))


@functools.lru_cache(maxsize=1)
def code_identity() -> str:
    """What identifies the smilfit code a fit runs with, for resuming: a SHA-256 (16 hex
    digits) of every module's path and content in the package. A handler's default, an
    optimiser's rule, changes a fit's answer without changing its config: batches fitted
    by other code are stale, and a resume must not mix them with new ones (read once per
    process)."""
    root = Path(__file__).resolve().parents[2]           # the smilfit package
    digest = hashlib.sha256()
    for path in sorted(root.rglob('*.py')):
        digest.update(str(path.relative_to(root)).encode() + b'\0')
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def registrant_config(cfg: Mapping[str, Any], progress: bool,
                      error: type = FittingConfigError) -> Dict[str, Any]:
    """The registrant config a dataset fit (or a registration) builds, and a fit records
    in its results' ``config``: ``cfg.registrant`` with ``cfg.body_model`` where it names
    none, without progress-bar hooks unless ``progress``.

    Raises:
        error: (:class:`FittingConfigError` by default) no registrant, or no body model.
    """
    reg_cfg = dict(cfg.get('registrant') or {})
    if not reg_cfg:
        raise error('the config needs a registrant = dict(type=...)')
    reg_cfg.setdefault('body_model', cfg.get('body_model'))
    if reg_cfg['body_model'] is None:
        raise error('no body_model: set body_model (e.g. via _base_) or '
                    'registrant.body_model')
    if not progress:
        reg_cfg['hooks'] = [h for h in reg_cfg.get('hooks', ()) if not (
            isinstance(h, Mapping) and h.get('type') == 'ProgressBarHook')]
    return reg_cfg


def stamp_changes(old: str, new: str) -> List[str]:
    """What differs between two stamps (JSON of ``data``, ``registrant``, ``dataset`` and
    ``code``), named for a message; ``['config']`` when the old one is not readable."""
    try:
        before = json.loads(old)
    except json.JSONDecodeError:
        return ['config']
    after = json.loads(new)
    names = dict(data='data config', registrant='registrant config', dataset='dataset file',
                 code='smilfit code')
    return [names[k] for k in names if before.get(k) != after.get(k)]


__all__ = ['DATA_KEYS', 'FittingConfigError', 'StaleDataError', 'AllSamplesFailedError',
           'load_joint_lookup', 'check_data_config', 'dataset_identity', 'code_identity',
           'registrant_config', 'stamp_changes']
