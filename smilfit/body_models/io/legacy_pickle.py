"""Legacy SMPL/SMAL/SMIL model pickles: safe reading, exact writing.

Legacy model files are Python pickles of a dict in the SMPL layout, read only through
the allow-list unpickler of :mod:`.restricted_unpickler` (a plain ``pickle.load`` of a
downloaded model would be arbitrary code execution).

:func:`legacy_dict_to_model_data` maps the dict to :class:`BodyModelData` and records
in ``extra['legacy']`` what is needed for :func:`model_data_to_legacy_dict` to rebuild
the original dict exactly (same keys, order, types, dtypes and values).

The parts live in their own modules: :mod:`.restricted_unpickler` (the allow-list
unpickler and its stubs), :mod:`.legacy_reader` (file -> plain dict of arrays),
:mod:`.legacy_layout` (dict <-> :class:`BodyModelData`). This module writes the format
(:func:`dumps_legacy_pickle`, :func:`write_legacy_pickle`), loads a file into model data
(:func:`load_legacy_model`) and re-exports the rest.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Optional, Union

from ..model_data import BodyModelData
from .legacy_layout import (LEGACY_META_KEY, SMILFIT_METADATA_KEY, legacy_dict_to_model_data,
                            model_data_to_legacy_dict)
from .legacy_reader import LegacyModelError, _read_with_sources, read_legacy_pickle
from .restricted_unpickler import (ChumpyStub, RestrictedUnpickler, SparseStub,
                                   UnsafePickleError, _np_multiarray)

PathLike = Union[str, 'os.PathLike[str]']


def dumps_legacy_pickle(data: BodyModelData) -> bytes:
    """Pickle :func:`model_data_to_legacy_dict` (protocol 2, numpy-1 module paths).

    numpy 2 would name ``numpy._core`` in the stream, which numpy 1.x cannot import;
    the legacy ``numpy.core`` names load under both (numpy 2 keeps a shim).
    """
    buf = io.BytesIO()
    _LegacyPickler(buf, protocol=2).dump(model_data_to_legacy_dict(data))
    return buf.getvalue()


_LEGACY_GLOBAL_NAMES = {
    id(_np_multiarray._reconstruct): b'numpy.core.multiarray\n_reconstruct\n',
    id(_np_multiarray.scalar): b'numpy.core.multiarray\nscalar\n',
}


class _LegacyPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pure-Python pickler that names numpy internals by their numpy-1 module path."""

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        legacy = _LEGACY_GLOBAL_NAMES.get(id(obj))
        if legacy is None:
            super().save_global(obj, name)
            return
        self.write(pickle.GLOBAL + legacy)
        self.memoize(obj)


def write_legacy_pickle(data: BodyModelData, path: PathLike) -> None:
    """Validate ``data`` and write it as a legacy model pickle (temp file + rename)."""
    from . import write_bytes_atomic  # late: the package imports this module
    data.validate()
    write_bytes_atomic(Path(path), dumps_legacy_pickle(data))


def load_legacy_model(path: PathLike, name: Optional[str] = None) -> BodyModelData:
    """Read and map a legacy pickle; ``extra['legacy']['converted']`` names chumpy/sparse keys.

    Not validated here; :func:`smilfit.body_models.io.load_model_data` validates.
    """
    d, sources = _read_with_sources(path)
    data = legacy_dict_to_model_data(d, name=name or Path(path).stem)
    if sources:
        data.extra[LEGACY_META_KEY]['converted'] = dict(sources)
    return data


__all__ = ['UnsafePickleError', 'LegacyModelError', 'RestrictedUnpickler', 'ChumpyStub',
           'SparseStub', 'read_legacy_pickle', 'legacy_dict_to_model_data',
           'model_data_to_legacy_dict', 'dumps_legacy_pickle', 'write_legacy_pickle',
           'load_legacy_model', 'LEGACY_META_KEY', 'SMILFIT_METADATA_KEY']
