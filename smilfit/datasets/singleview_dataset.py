"""One view per item over smilfit's HDF5 format (see :mod:`.multiview_dataset`)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from smilfit.registry import DATASETS

from .multiview_dataset import HDF5DatasetBase

__all__ = ['SingleViewHDF5Dataset']


@DATASETS.register_module()
class SingleViewHDF5Dataset(HDF5DatasetBase):
    """One item per valid view of every sample (the only view of single-view data).

    Same arguments, splits and sample layout as
    :class:`~smilfit.datasets.MultiViewHDF5Dataset` with ``C = 1`` and
    ``single_view=True`` (``PackInputs`` then drops the view axis by default);
    ``view_indices`` holds the view's slot in the file. ``max_views`` is ignored.
    """

    SINGLE_VIEW = True

    def _items(self, base: dict, valid: np.ndarray) -> List[dict]:
        return [dict(base, view=int(v)) for v in np.flatnonzero(valid)]

    def load_sample(self, idx: int) -> Dict[str, Any]:
        info = self.get_data_info(idx)
        return self._load(info, np.array([info['view']]))
