"""Where a prepared dataset came from, so a stale one is never fitted.

``tools/fit.py`` prepares its dataset (``data.path``) from ``data.sleap`` (a SLEAP session or
labels file) or ``data.synthetic`` (generator options) on first use and reuses it later;
``tools/preprocess_sleap.py`` makes one the same way (with images and crops). The source is
recorded in the HDF5 file's ``smilfit_source`` attribute (JSON): the kind, the options, and
for SLEAP input every input file's path, size, modification time and content digest
(SHA-256, computed once when the dataset is made). On reuse the record is compared with what
the config asks for now (:func:`source_changes`): a file with its recorded size and time at
the recorded path is taken as unchanged without reading it; any other file of the recorded
size is read and its digest compared, so a session copied to another folder (the same
bytes, new times) is the same input, reported by :func:`source_notes` as the same files at
another path. When the input files, the options or the body model differ (or the file has
no record),
:func:`smilfit.apis.fitting.prepare_data` refuses to fit it and says what differs. It never
overwrites the file: ``data.path`` may be a dataset the user made and means to keep. A
missing ``data.sleap.input`` is an error whatever exists at ``data.path``.

Of SLEAP ingestion's options, those that decide which samples, keypoints and values a
dataset holds (:data:`CONTENT_OPTIONS`) are always compared, with the ingestion's defaults
filled in on both sides. How the samples are stored (images, crop, undistortion, JPEG
quality) changes nothing a fit reads, so those options count only where the config sets
them: a dataset prepared with images and crops satisfies a config that asks for its
session without them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from smilfit.utils.digest import file_sha256

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['SOURCE_ATTR', 'CONTENT_OPTIONS', 'sleap_source', 'expected_source', 'read_source',
           'write_source', 'source_changes', 'source_notes']

#: HDF5 root attribute holding the JSON source record.
SOURCE_ATTR = 'smilfit_source'

#: SLEAP ingestion options that decide which samples, keypoints and values a dataset holds
#: (``units`` and ``body_model`` only label it).
CONTENT_OPTIONS = ('max_frames', 'frame_skip', 'min_views', 'confidence_threshold',
                   'include_3d', 'joint_lookup', 'shape_betas', 'points3d')
#: Ingestion options that only say how the run goes (never recorded, never compared).
RUN_OPTIONS = ('workers', 'progress', 'checkpoint_every_s', 'video_search_paths')
#: Options holding a file path: compared as resolved paths.
_PATH_OPTIONS = ('joint_lookup', 'shape_betas', 'points3d')


def _normalise(value: Any) -> Any:
    """JSON round trip: the form a record has after it was stored and read back."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _input_file(root: Path, name: str) -> Path:
    """The file a record's relative ``name`` stands for below input ``root``."""
    return root if root.is_file() else root / name


def _file_list(root: Path, exclude: Optional[Path] = None, digests: bool = False
               ) -> List[List[Any]]:
    """[relative path, size, mtime in ns] (and with ``digests`` the SHA-256) of ``root``
    (a file) or every file below it, but ``exclude`` and its temporary files (a dataset
    prepared inside the input folder must not make its own input look changed)."""
    def entry(path: Path, name: str) -> List[Any]:
        st = path.stat()
        return [name, st.st_size, st.st_mtime_ns] + ([file_sha256(path)] if digests else [])

    if root.is_file():
        return [entry(root, root.name)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in sorted(filenames):
            if name.startswith('.'):
                continue
            path = Path(dirpath) / name
            if exclude is not None and path.parent == exclude.parent and (
                    name == exclude.name or name.startswith(exclude.name + '.')):
                continue
            out.append(entry(path, str(path.relative_to(root))))
    return out


def sleap_source(input_path: PathLike, options: Mapping[str, Any],
                 output: Optional[PathLike] = None, digests: bool = False) -> Dict[str, Any]:
    """The record of a dataset ingested from ``input_path`` with ``options`` (keyword
    arguments of :class:`~smilfit.datasets.sleap_ingest.options.IngestOptions`; those in
    :data:`RUN_OPTIONS` are left out) into ``output`` (excluded from the input's files).
    ``digests``: also each file's SHA-256 (the record a dataset stores; reads every input
    file once)."""
    root = Path(input_path).resolve()
    kept = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    return _normalise(dict(kind='sleap', input=str(root), options=_canonical(kept),
                           files=_file_list(root, exclude=Path(output).resolve()
                                            if output else None, digests=digests)))


def _canonical(options: Mapping[str, Any]) -> Dict[str, Any]:
    """Path options as resolved paths, so ``a.csv`` and ``./a.csv`` are the same file."""
    return {k: (str(Path(v).resolve()) if k in _PATH_OPTIONS and v else v)
            for k, v in options.items()}


def _ingest_defaults() -> Dict[str, Any]:
    # Imported here: the ingestion modules are only needed where SLEAP records are compared.
    from smilfit.datasets.sleap_ingest.options import IngestOptions
    return {f.name: f.default for f in dataclasses.fields(IngestOptions)
            if f.name not in RUN_OPTIONS}


def _sleap_option_changes(stored: Mapping[str, Any], expected: Mapping[str, Any]
                          ) -> List[str]:
    """``name: stored -> expected`` for every ingestion option whose difference matters."""
    defaults = _ingest_defaults()
    old = dict(defaults, **_normalise(_canonical(stored or {})))
    new = dict(defaults, **_normalise(_canonical(expected or {})))
    keys = set(CONTENT_OPTIONS) | (set(expected or {}) - set(RUN_OPTIONS))
    return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(keys)
            if old.get(k) != new.get(k)]


def expected_source(data_cfg: Mapping[str, Any], body_model: Any = None
                    ) -> Optional[Dict[str, Any]]:
    """The source record a dataset prepared from ``data_cfg`` now would carry, or ``None``
    when the config prepares nothing (``data.path`` is used as it is).

    Raises:
        FileNotFoundError: ``data.sleap.input`` does not exist (whatever is at data.path).
    """
    sleap = data_cfg.get('sleap')
    if sleap is not None:
        sleap = dict(sleap)
        if 'input' not in sleap:
            raise ValueError("data.sleap needs 'input' (a session folder or a labels file)")
        root = Path(sleap.pop('input')).resolve()
        if not root.exists():
            raise FileNotFoundError(f'data.sleap.input {root} does not exist')
        return sleap_source(root, sleap, data_cfg.get('path'))
    synthetic = data_cfg.get('synthetic')
    if synthetic is not None:
        return _normalise(dict(kind='synthetic', options=dict(synthetic),
                               body_model=body_model))
    return None


def read_source(path: PathLike) -> Optional[Dict[str, Any]]:
    """The record stored in a prepared dataset (``None`` if it has none).

    Raises:
        DatasetFormatError: the file is not HDF5 or is truncated (the message names it).
        DamagedFileError: the record is damaged.
    """
    from smilfit.datasets.hdf5.files import reading
    from smilfit.datasets.hdf5.schema import _open_h5
    with _open_h5(path, 'r', 'prepared dataset') as f, reading(path, 'a prepared dataset'):
        text = f.attrs.get(SOURCE_ATTR)
        if text is None:
            return None
        return json.loads(text if isinstance(text, str) else text.decode('utf-8'))


def write_source(path: PathLike, record: Mapping[str, Any]) -> None:
    """Store ``record`` in the dataset at ``path`` (written last: a dataset interrupted
    before this has no record and is prepared again)."""
    import h5py
    with h5py.File(path, 'a') as f:
        f.attrs[SOURCE_ATTR] = json.dumps(record, sort_keys=True)


def _changed_files(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> List[str]:
    """Names of the input files whose content differs between the records (or that only
    one has). A file is unchanged when its size and time are the recorded ones at the
    recorded path (the fast path: nothing read), or when its size is and its bytes have the
    recorded digest."""
    old = {f[0]: f[1:] for f in stored.get('files') or []}
    new = {f[0]: f[1:] for f in expected.get('files') or []}
    # Elsewhere a time says nothing (a copy's times are new; two files written in one clock
    # tick share one): only the digest does.
    same_place = stored.get('input') == expected.get('input')
    root = Path(expected.get('input') or '')
    changed = []
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name), new.get(name)
        if was is None or now is None or was[0] != now[0]:
            changed.append(name)
        elif same_place and was[1] == now[1]:
            continue
        elif len(was) < 3 or file_sha256(_input_file(root, name)) != was[2]:
            changed.append(name)           # no digest recorded: the time is all there is
    return changed


def source_changes(stored: Optional[Mapping[str, Any]], expected: Mapping[str, Any]
                   ) -> List[str]:
    """What differs between a stored record and the expected one, in words (empty: same).
    A SLEAP input at another path with the same files (by content) is not a change:
    :func:`source_notes` says so."""
    if stored is None:
        return ['the file records no source']
    sleap = expected.get('kind') == 'sleap' == stored.get('kind')
    changes = []
    for key in sorted(set(stored) | set(expected)):
        if sleap and key == 'input':
            continue                       # judged by the files it holds
        if key == 'files':
            diff = _changed_files(stored, expected)
            if diff:
                changes.append(f'input files changed ({len(diff)}: {", ".join(diff[:5])}'
                               f'{", ..." if len(diff) > 5 else ""})')
            continue
        if stored.get(key) == expected.get(key):
            continue
        if key == 'options' and sleap:
            diff = _sleap_option_changes(stored.get(key), expected.get(key))
            if diff:
                changes.append(f'options changed ({", ".join(diff)})')
        else:
            changes.append(f'{key} changed')
    return changes


def source_notes(stored: Optional[Mapping[str, Any]], expected: Mapping[str, Any]
                 ) -> List[str]:
    """What a user should know of a record that :func:`source_changes` accepts: the same
    input files at another path (a session copied between machines or folders)."""
    if stored is None or stored.get('kind') != 'sleap' or expected.get('kind') != 'sleap':
        return []
    if stored.get('input') != expected.get('input'):
        return [f'the same files at another path: prepared from {stored.get("input")}, '
                f'the config names {expected.get("input")}']
    return []
