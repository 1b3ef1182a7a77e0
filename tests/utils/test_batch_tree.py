"""Tiling and slicing nested batches along the sample axis."""
import dataclasses
from typing import Optional

import torch

from smilfit.utils.batch_tree import slice_batch, tile_batch


@dataclasses.dataclass
class Out:
    joints: torch.Tensor
    vertices: Optional[torch.Tensor]


def test_tile_is_iteration_major_and_keeps_shared_entries():
    B = 3
    x = torch.arange(B * 2.0).reshape(B, 2)
    tree = dict(x=x, nested=dict(y=torch.arange(B)), names=('a', 'b'), shared=torch.eye(4),
                scalar=torch.tensor(1.0), out=Out(x, None), lst=[x], meta='s')
    tiled = tile_batch(tree, 2, B)
    assert torch.equal(tiled['x'], torch.cat([x, x]))
    assert torch.equal(tiled['nested']['y'], torch.tensor([0, 1, 2, 0, 1, 2]))
    assert tiled['names'] == ('a', 'b') and tiled['meta'] == 's'
    assert tiled['shared'].shape == (4, 4) and tiled['scalar'].ndim == 0
    assert tiled['out'].joints.shape == (6, 2) and tiled['out'].vertices is None
    assert isinstance(tiled['lst'], list) and tiled['lst'][0].shape == (6, 2)
    assert tile_batch(tree, 1, B) is tree


def test_slice_takes_one_copy_back():
    B = 4
    x = torch.randn(B, 5)
    tiled = tile_batch(dict(x=x, out=Out(x, x * 2)), 3, B)
    last = slice_batch(tiled, 2 * B, 3 * B, 3 * B)
    assert torch.equal(last['x'], x) and torch.equal(last['out'].vertices, x * 2)
    # Tensors of another leading size are not per-sample: kept.
    assert slice_batch(dict(c=torch.ones(7)), 0, 2, 12)['c'].shape == (7,)
