"""Data preprocessor of the regressors: batch to device, images checked (and normalised).

Batches come from ``PackInputs`` with ``collate_fn=dict(type='default_collate')``:
``inputs`` (B, [T,] [C,] 3, H, W) float images, already normalised by ``PackInputs``, and
``data_samples`` a dict of tensors (nested ``params``) plus metadata lists. A list of
per-sample tensors (``pseudo_collate``) is stacked. uint8 images (a pipeline without
normalisation) are normalised here with ``mean``/``std``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from smilfit.registry import MODELS

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class RegressionDataPreprocessor(BaseDataPreprocessor):
    """Move a regression batch to the model's device.

    Args:
        mean, std: RGB normalisation (0-255 units) applied to uint8 inputs only.
        non_blocking: passed to ``Tensor.to``.
    """

    def __init__(self, mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 std: Optional[Sequence[float]] = IMAGENET_STD,
                 non_blocking: bool = False) -> None:
        super().__init__(non_blocking)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)

    def forward(self, data: Any, training: bool = False) -> dict:
        """``dict(inputs, data_samples)`` on the device; images float32 (B, ..., 3, H, W)."""
        if not isinstance(data, dict) or 'inputs' not in data:
            raise KeyError('RegressionDataPreprocessor expects dict(inputs=..., '
                           f'data_samples=...), got {type(data).__name__}'
                           + (f' with keys {sorted(data)}' if isinstance(data, dict) else ''))
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        data = self.cast_data(dict(data, inputs=inputs))
        x = data['inputs']
        if x.ndim < 4 or x.shape[-3] != 3:
            raise ValueError(f'inputs must be (B, [T,] [C,] 3, H, W) images, got '
                             f'{tuple(x.shape)}')
        if x.dtype == torch.uint8:
            x = (x.float() - self.mean) / self.std
        data['inputs'] = x.float()
        data.setdefault('data_samples', {})
        return data


__all__ = ['RegressionDataPreprocessor']
