"""Measure a calibrated rig's units before training: the regressor then works in model
units whatever the calibration's (:mod:`smilfit.models.regressors.rig_units`)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import print_log

from smilfit.registry import HOOKS

from .model_access import unwrap_model

#: Samples of the training set read (spread evenly over it).
NUM_SAMPLES = 64
_KEYS = ('keypoints_2d', 'K', 'R', 't', 'dist', 'valid', 'visible', 'confidence')


@HOOKS.register_module()
class RigUnitsHook(Hook):
    """Before training, set the regressor's rig units (``set_rig_units``) from up to
    ``num_samples`` samples of the training set: their triangulated 3D keypoints (or
    their 2D keypoints triangulated through the calibration) against the body model's
    rest keypoints. Measured whenever the training data allow it (a resumed run measures
    the same units again; weights from another rig get this rig's, with a warning); units
    set in code or loaded are kept where the data have nothing to measure them by. Skipped
    for models without calibrated cameras. Every rank reads the same samples, so every rank
    gets the same units.

    Args:
        num_samples: samples read (spread evenly over the training set).
    """

    priority = 'VERY_HIGH'

    def __init__(self, num_samples: int = NUM_SAMPLES) -> None:
        if int(num_samples) < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        self.num_samples = int(num_samples)

    def before_train(self, runner) -> None:
        model = unwrap_model(runner.model)
        if not hasattr(model, 'set_rig_units') or not model.camera_codec.uses_calibration:
            return
        samples = self.read_samples(runner.train_dataloader.dataset)
        measured = None if samples is None else model.estimate_rig_units(samples)
        if measured is None:
            if model.uses_rig_units:     # set in code or loaded: nothing to measure them by
                return
            print_log('RigUnitsHook: the training data have no 3D keypoints and too few '
                      'views to triangulate: the calibration is taken to be in model units',
                      logger='current', level=30)
            return
        scale, depth = measured
        before = model.rig_units_scale
        if model.uses_rig_units and abs(scale / before - 1.0) > 1e-3:
            # a checkpoint of another rig fine-tuned on this one: this rig's units
            print_log(f'RigUnitsHook: the loaded weights were trained with {before:.4g} '
                      f'calibration units per model unit; this training data has {scale:.4g}',
                      logger='current', level=30)
        model.set_rig_units(scale, depth)
        print_log(f'RigUnitsHook: {scale:.4g} calibration units per model unit; the animal '
                  f'is {depth:.4g} model units ({depth * scale:.4g} calibration units) from '
                  'the cameras', logger='current')

    def read_samples(self, dataset) -> Optional[Dict[str, Any]]:
        """Batched arrays of up to :attr:`num_samples` samples of an HDF5 dataset (every
        view of the file), or None for a dataset without an HDF5 reader."""
        reader = getattr(dataset, 'reader', None)
        if reader is None or not len(dataset):
            return None
        n = len(dataset)
        picks = np.unique(np.linspace(0, n - 1, min(n, self.num_samples)).round().astype(int))
        rows = set()
        for i in picks:
            info = dataset.get_data_info(int(i))
            # a frame's file row, or a clip's (-1: a padded frame)
            rows.update(int(r) for r in info.get('indices', [info.get('index', -1)])
                        if int(r) >= 0)
        rows = sorted(rows)[:self.num_samples]
        if not rows:
            return None
        keys = list(_KEYS) + (['keypoints_3d'] if reader.has_keypoints_3d else [])
        data = reader.read(rows, keys=keys)
        out = {k: np.asarray(v) for k, v in data.items() if k != 'valid'}
        out['view_valid'] = np.asarray(data['valid']).astype(bool)
        return out


__all__ = ['RigUnitsHook', 'NUM_SAMPLES']
