"""Tile and slice nested batches (dicts, dataclasses of tensors) along the sample axis.

A regressor supervises every IEF iteration: decoding the T iterations' predictions as one
batch of T * B samples (iteration-major: sample ``t * B + b``) runs the body model and the
losses once instead of T times, a third of the kernel launches that bound a GPU step.
These helpers bring the batch's observations to that layout and take one iteration back
out of the decoded result.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch


def tile_batch(tree: Any, times: int, batch: int) -> Any:
    """Repeat every per-sample tensor of ``tree`` ``times`` times along dim 0.

    Args:
        tree: tensors, mappings (returned as dicts), lists/tuples and dataclasses of
            them; other values (strings, numbers, None) are kept as they are.
        times: T >= 1, the copies.
        batch: B, the sample count: only tensors whose first dimension is B are
            per-sample; other tensors (shared constants, clip-level entries) are kept.

    Returns:
        The same structure with (B, ...) tensors replaced by (T * B, ...) ones, copy ``t``
        at rows ``t * B .. (t + 1) * B``.
    """
    if times == 1:
        return tree

    def tile(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[0] != batch:
            return x
        return x.repeat((times,) + (1,) * (x.ndim - 1))
    return _map_tensors(tree, tile)


def slice_batch(tree: Any, start: int, stop: int, batch: int) -> Any:
    """Rows ``start:stop`` of every tensor of ``tree`` whose first dimension is ``batch``
    (others are kept); the structure as in :func:`tile_batch`."""
    def take(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[0] != batch:
            return x
        return x[start:stop]
    return _map_tensors(tree, take)


def _map_tensors(tree: Any, fn) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(tree, **{f.name: _map_tensors(getattr(tree, f.name), fn)
                                            for f in dataclasses.fields(tree) if f.init})
    if isinstance(tree, (list, tuple)) and any(isinstance(v, (torch.Tensor, Mapping))
                                               for v in tree):
        items = [_map_tensors(v, fn) for v in tree]
        return items if isinstance(tree, list) else tuple(items)
    return tree


__all__ = ['tile_batch', 'slice_batch']
