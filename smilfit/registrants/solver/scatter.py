"""Per-group reductions of per-sample values (groups of samples sharing parameters)."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def sum_into(values: Tensor, index: Tensor, size: int) -> Tensor:
    """(size, ...) ``values`` (n, ...) summed per ``index`` (n,)."""
    return values.new_zeros((size,) + values.shape[1:]).index_add_(0, index, values)


def scatter_max(values: Tensor, index: Tensor, size: int) -> Tensor:
    """(size,) the largest of ``values`` (n,) >= 0 per ``index`` (0 where none)."""
    return values.new_zeros(size).scatter_reduce_(0, index, values, 'amax')


__all__ = ['sum_into', 'scatter_max']
