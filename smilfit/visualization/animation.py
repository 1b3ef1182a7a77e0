"""Animation files: per-frame body-model parameters as ``<name>.npz`` + ``<name>.json``.

The ``.npz`` holds the arrays, bit for bit (any numeric or bool dtype, no pickles). The
``.json`` beside it is for people and tools: the format name, the number of frames, fps,
the body model (its file path or config), free metadata, and for every parameter its
shape and dtype, plus the SHA-256 of the ``.npz`` so that a stale or corrupted pair is
refused on load. Example ``.json``::

    {"format": "smilfit-animation", "version": 1, "num_frames": 32, "fps": 25.0,
     "body_model": "models/SMILy_Mouse_static_joints.pkl",
     "params": {"body_pose": {"shape": [32, 26, 3], "dtype": "float32"}, ...},
     "npz_sha256": "...", "meta": {"session": "mouse_01", ...}}

Both files are written under temporary names and renamed (the ``.npz`` first, so a pair
with a fresh ``.json`` is always complete).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
from ..utils.atomic import atomic_open
from ..utils.digest import file_sha256

__all__ = ['save_animation', 'load_animation', 'Animation', 'AnimationFormatError',
           'ANIMATION_FORMAT']

PathLike = Union[str, os.PathLike]
ANIMATION_FORMAT = 'smilfit-animation'
ANIMATION_VERSION = 1


class AnimationFormatError(ValueError):
    """An animation pair is missing, inconsistent or corrupted; the message says which."""


class Animation(NamedTuple):
    """What :func:`load_animation` returns.

    Attributes:
        params: name -> (T, ...) array, exactly as saved (dtype and bits).
        meta: the ``meta`` dict given to :func:`save_animation`.
        fps: frames per second, or None.
        body_model: the body model path or config, or None.
        num_frames: T.
    """

    params: Dict[str, np.ndarray]
    meta: Dict[str, Any]
    fps: Optional[float]
    body_model: Union[None, str, Dict[str, Any]]
    num_frames: int


def _base(path: PathLike) -> Path:
    """``x``, ``x.npz`` or ``x.json`` -> ``x``."""
    path = Path(path)
    return path.with_suffix('') if path.suffix in ('.npz', '.json') else path



def _atomic_write(path: Path, write) -> None:
    with atomic_open(path, 'wb') as f:
        write(f)


def _check_json(value: Any, where: str) -> None:
    """Refuse what JSON would not give back as it was (so that load returns ``meta``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f'save_animation: {where} has a non-string key {k!r}')
            _check_json(v, f'{where}[{k!r}]')
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f'{where}[{i}]')
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f'save_animation: {where} is {value}, not valid JSON')
    elif not (value is None or isinstance(value, (str, bool, int))):
        raise TypeError(f'save_animation: {where} is a {type(value).__name__}; meta holds '
                        'JSON values only (dict, list, str, int, float, bool, None; convert '
                        'tuples to lists and numpy scalars with .item())')


def save_animation(path: PathLike, params: Mapping[str, Any],
                   meta: Optional[Mapping[str, Any]] = None, *, fps: Optional[float] = None,
                   body_model: Union[None, str, os.PathLike, Mapping[str, Any]] = None
                   ) -> Tuple[Path, Path]:
    """Write per-frame parameters to ``<path>.npz`` and their description to ``<path>.json``.

    Args:
        path: the file path without extension (``.npz``/``.json`` endings are dropped).
        params: name -> (T, ...) array (numpy or torch; numeric or bool), the same T for
            all, e.g. ``global_orient`` (T, 3), ``body_pose`` (T, J-1, 3), ``betas`` (T, K),
            ``transl`` (T, 3).
        meta: free JSON metadata (returned unchanged by :func:`load_animation`).
        fps: frames per second of the animation.
        body_model: the body model file path or its config dict.

    Returns:
        The ``.npz`` and ``.json`` paths.
    """
    base = _base(path)
    if not params:
        raise ValueError('save_animation: params is empty')
    arrays: Dict[str, np.ndarray] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f'save_animation: parameter names must be identifiers, got '
                             f'{name!r}')
        if hasattr(value, 'detach'):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype.kind not in 'biuf':
            raise TypeError(f'save_animation: params[{name!r}] has dtype {arr.dtype}; only '
                            'numeric and bool arrays are stored')
        if arr.ndim == 0:
            raise ValueError(f'save_animation: params[{name!r}] must be (T, ...), got a scalar')
        arrays[name] = arr
    frames = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(frames.values())) != 1:
        raise ValueError(f'save_animation: parameters disagree on the number of frames: '
                         f'{frames}')
    meta = dict(meta or {})
    _check_json(meta, 'meta')
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f'save_animation: fps must be a positive number, got {fps!r}')
    if isinstance(body_model, os.PathLike):
        body_model = os.fspath(body_model)
    if body_model is not None and not isinstance(body_model, str):
        body_model = dict(body_model)
        _check_json(body_model, 'body_model')
    base.parent.mkdir(parents=True, exist_ok=True)
    npz_path, json_path = base.with_suffix('.npz'), base.with_suffix('.json')
    _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    header = dict(format=ANIMATION_FORMAT, version=ANIMATION_VERSION,
                  num_frames=int(next(iter(frames.values()))),
                  fps=None if fps is None else float(fps), body_model=body_model,
                  params={n: dict(shape=list(a.shape), dtype=a.dtype.str)
                          for n, a in arrays.items()},
                  npz_sha256=file_sha256(npz_path), meta=meta)
    text = json.dumps(header, indent=2)
    _atomic_write(json_path, lambda f: f.write(text.encode('utf-8')))
    return npz_path, json_path


def load_animation(path: PathLike, verify: bool = True) -> Animation:
    """Read an animation written by :func:`save_animation`.

    Args:
        path: the path without extension, or either file of the pair.
        verify: check the ``.npz`` against the SHA-256 recorded in the ``.json``.

    Returns:
        :class:`Animation`: the arrays exactly as saved (same dtypes, same bits), the
        ``meta`` given to :func:`save_animation`, fps, body model and number of frames.

    Raises:
        AnimationFormatError: a file is missing, not an animation, or the pair disagrees
            (checksum, parameter names, shapes or dtypes); the message says which.
    """
    base = _base(path)
    npz_path, json_path = base.with_suffix('.npz'), base.with_suffix('.json')
    for p in (npz_path, json_path):
        if not p.is_file():
            raise AnimationFormatError(f'{p}: no such file (an animation is a .npz + .json '
                                       'pair)')
    try:
        info = json.loads(json_path.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError) as err:
        raise AnimationFormatError(f'{json_path}: not valid JSON ({err})') from err
    if not isinstance(info, dict) or info.get('format') != ANIMATION_FORMAT:
        raise AnimationFormatError(f'{json_path}: not a {ANIMATION_FORMAT} file')
    if int(info.get('version', 0)) > ANIMATION_VERSION:
        raise AnimationFormatError(f'{json_path}: version {info.get("version")} is newer than '
                                   f'this smilfit reads ({ANIMATION_VERSION})')
    if verify and file_sha256(npz_path) != info.get('npz_sha256'):
        raise AnimationFormatError(f'{npz_path}: its contents do not match the checksum in '
                                   f'{json_path.name} (corrupted, or the pair was mixed up)')
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            params = {name: z[name] for name in z.files}
    except Exception as err:  # zipfile/pickle/format errors all mean "unreadable"
        raise AnimationFormatError(f'{npz_path}: cannot be read ({err})') from err
    described = info.get('params') or {}
    if set(described) != set(params):
        raise AnimationFormatError(f'{base}: the .json describes parameters '
                                   f'{sorted(described)} but the .npz holds {sorted(params)}')
    for name, arr in params.items():
        want = described[name]
        if list(arr.shape) != list(want.get('shape', [])) or arr.dtype.str != want.get('dtype'):
            raise AnimationFormatError(
                f'{base}: parameter {name!r} is {arr.dtype.str} {list(arr.shape)} in the '
                f'.npz but {want.get("dtype")} {want.get("shape")} in the .json')
    return Animation(params=params, meta=info.get('meta') or {}, fps=info.get('fps'),
                     body_model=info.get('body_model'), num_frames=int(info['num_frames']))
