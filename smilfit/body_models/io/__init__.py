"""Reading and writing body model files.

Two formats, chosen by the file extension:

- ``.pkl``: legacy SMPL/SMAL/SMIL pickles, read with an allow-list unpickler (no code
  from the file is ever run) and written back exactly; see :mod:`.legacy_pickle` (and its
  parts :mod:`.restricted_unpickler`, :mod:`.legacy_reader`, :mod:`.legacy_layout`).
- ``.json`` / ``.json.gz``: smilfit's human-readable model format; see
  :mod:`.smil_json` (its value encodings: :mod:`.json_codecs`) and ``docs/model_format.md``.

Every loaded model is validated; every write goes to a temporary file in the target
directory that is renamed into place, so a failure never leaves a partial file.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Union

from ...utils.atomic import atomic_open
from ..model_data import BodyModelData, ModelValidationError
from .legacy_pickle import (LegacyModelError, UnsafePickleError, dumps_legacy_pickle,
                            legacy_dict_to_model_data, load_legacy_model,
                            model_data_to_legacy_dict, read_legacy_pickle,
                            write_legacy_pickle)
from .smil_json import (FORMAT_NAME, FORMAT_VERSION, ModelFormatError, dumps_model_json,
                        model_data_from_json_dict, model_data_to_json_dict, read_model_json,
                        write_model_json)

PathLike = Union[str, 'os.PathLike[str]']

#: Supported model file extensions, longest first (``.json.gz`` before ``.json``).
SUPPORTED_EXTENSIONS = ('.json.gz', '.json', '.pkl')


def model_file_kind(path: PathLike) -> str:
    """Return the extension of ``path`` that selects its format (one of SUPPORTED_EXTENSIONS).

    Raises:
        ValueError: the extension is not supported; the message names the path.
    """
    lower = str(path).lower()
    for ext in SUPPORTED_EXTENSIONS:
        if lower.endswith(ext):
            return ext
    raise ValueError(f'unsupported model file extension: {path} '
                     f'(supported: {", ".join(SUPPORTED_EXTENSIONS)})')


def write_bytes_atomic(path: PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same directory + ``os.replace``.

    The rename is atomic on POSIX and Windows, so readers see the old file or the
    complete new one, and an exception leaves no partial output behind.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f'output directory does not exist: {path.parent}')
    with atomic_open(path, 'wb') as f:
        f.write(payload)


def load_model_data(path: PathLike) -> BodyModelData:
    """Load and validate a body model file (``.pkl``, ``.json`` or ``.json.gz``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        ValueError: unsupported extension.
        UnsafePickleError: a pickle names a global outside the allow-list.
        ModelValidationError: the model data is inconsistent (message names the field).
    """
    kind = model_file_kind(path)
    if Path(path).is_dir():
        raise IsADirectoryError(f'model file {path} is a directory')
    if not Path(path).is_file():
        raise FileNotFoundError(f'model file not found: {path}')
    if kind == '.pkl':
        data = load_legacy_model(path)
    else:
        data = read_model_json(path, validate=False)
    return data.validate()


def save_model_data(data: BodyModelData, path: PathLike) -> None:
    """Validate ``data`` and write it atomically in the format given by ``path``'s extension."""
    kind = model_file_kind(path)
    data.validate()
    if kind == '.pkl':
        payload = dumps_legacy_pickle(data)
    else:
        payload = dumps_model_json(data).encode('utf-8')
        if kind == '.json.gz':
            payload = gzip.compress(payload, compresslevel=6, mtime=0)
    write_bytes_atomic(path, payload)


__all__ = ['SUPPORTED_EXTENSIONS', 'FORMAT_NAME', 'FORMAT_VERSION', 'BodyModelData',
           'ModelValidationError', 'ModelFormatError', 'UnsafePickleError', 'LegacyModelError',
           'load_model_data', 'save_model_data', 'model_file_kind', 'write_bytes_atomic',
           'read_legacy_pickle', 'legacy_dict_to_model_data', 'model_data_to_legacy_dict',
           'write_legacy_pickle', 'dumps_legacy_pickle', 'load_legacy_model',
           'read_model_json', 'write_model_json', 'dumps_model_json',
           'model_data_to_json_dict', 'model_data_from_json_dict']
