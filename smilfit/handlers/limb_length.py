"""Limb-length handler: lengths between named model points vs targets or observed 3D."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..registry import HANDLERS
from .base import LossSpec
from smilfit.body_models.keypoint_naming import (lookup_model_names, match_keypoints,
                                                 model_point_names)
from .matching import KeypointHandlerBase


@HANDLERS.register_module()
class LimbLengthHandler(KeypointHandlerBase):
    """Lengths of named point pairs against fixed targets or observed 3D lengths.

    ``pairs`` name model points (keypoint names, or joint names with
    ``source='joints'``; with ``source='joints'`` and no ``pairs`` every bone
    (parent, child) of the kinematic tree is used). Targets:

    - ``target_lengths`` (P,) given (NaN = no target for that pair), or else
    - lengths measured per sample between the matched data points of
      ``observations['keypoints_3d']`` (B, K, 3) (names matched through the lookup as in
      the keypoint handlers; a pair with an unmatched or missing end does not count).

    The loss config (``LimbLengthLoss`` by default; e.g. ``mode='relative'``,
    ``pair_weights`` in pair order) gets its ``pairs`` (and ``target_lengths``) from the
    handler at :meth:`setup`, so give it as a config dict without them.

    Args:
        name, weight, source, joint_lookup, offsets_key, offsets_frame, check_finite: see
            :class:`~.matching.KeypointHandlerBase`.
        pairs: (P, 2) model point names.
        target_lengths: optional (P,) target lengths (world units).
        loss: a ``LimbLengthLoss``-like config dict.
        key: observation key of the 3D points for measured targets.
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 pairs: Optional[Sequence[Sequence[str]]] = None,
                 target_lengths: Optional[Sequence[float]] = None,
                 source: str = 'keypoints',
                 joint_lookup: Optional[Mapping[str, Optional[str]]] = None,
                 offsets_key: Optional[str] = 'auto', offsets_frame: str = 'world',
                 key: str = 'keypoints_3d',
                 check_finite: bool = False) -> None:
        super().__init__(name, None, weight, source=source, joint_lookup=joint_lookup,
                         offsets_key=offsets_key, offsets_frame=offsets_frame,
                         check_finite=check_finite)
        loss = dict(type='LimbLengthLoss') if loss is None else loss
        if isinstance(loss, nn.Module):
            raise TypeError(f'handler {name!r}: LimbLengthHandler builds its loss at setup '
                            'from the named pairs; give loss as a config dict')
        if 'pairs' in loss or 'names' in loss:
            raise ValueError(f'handler {name!r}: give pairs to the handler (by name), not '
                             'in the loss config')
        self.loss_cfg = copy.deepcopy(dict(loss))
        if pairs is not None:
            pairs = [[str(a), str(b)] for a, b in pairs]
            if not pairs:
                raise ValueError(f'handler {name!r}: pairs is empty')
        if source == 'keypoints' and pairs is None:
            raise ValueError(f'handler {name!r}: give pairs of keypoint names (the default '
                             "bones need source='joints')")
        self.pairs = pairs
        if target_lengths is not None:
            target_lengths = [float('nan') if v is None else float(v) for v in target_lengths]
            if pairs is not None and len(target_lengths) != len(pairs):
                raise ValueError(f'handler {name!r}: {len(target_lengths)} target_lengths '
                                 f'for {len(pairs)} pairs')
        self.target_lengths = target_lengths
        self.key = key
        self.register_buffer('point_index', None, persistent=False)
        self.register_buffer('obs_index', None, persistent=False)

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        data_info = data_info or {}
        names = model_point_names(body_model, self.source)
        pairs = self.pairs
        if pairs is None:  # every bone of the tree
            parents = np.asarray(body_model.data.parents)
            pairs = [[names[p], names[c]] for c, p in enumerate(parents) if p >= 0]
        pos = {n: i for i, n in enumerate(names)}
        unknown = sorted({n for pair in pairs for n in pair if n not in pos})
        if unknown:
            raise KeyError(f'handler {self.name!r}: unknown model {self.source} {unknown} in '
                           f'pairs; model {self.source}: {names}')
        if self.target_lengths is not None and len(self.target_lengths) != len(pairs):
            raise ValueError(f'handler {self.name!r}: {len(self.target_lengths)} '
                             f'target_lengths for {len(pairs)} pairs')
        self.resolved_pairs = pairs
        device = getattr(body_model, 'device', None)
        ends = [pos[n] for pair in pairs for n in pair]           # (2P,)
        self.point_index = torch.as_tensor(ends, dtype=torch.long, device=device)
        if self.target_lengths is None:
            if 'keypoint_names' not in data_info:
                raise KeyError(f'handler {self.name!r}: measured targets need '
                               'data_info["keypoint_names"] (or give target_lengths)')
            lookup = (self.joint_lookup if self.joint_lookup is not None
                      else data_info.get('joint_lookup'))
            self.match = match_keypoints(names, data_info['keypoint_names'], lookup,
                                         what=self.source,
                                         lookup_names=lookup_model_names(body_model))
            to_data = dict(zip(self.match.model_names, self.match.data_index.tolist()))
            self.obs_index = torch.as_tensor([to_data.get(n, -1) for pair in pairs
                                              for n in pair], dtype=torch.long,
                                             device=device)
            if not bool((self.obs_index.view(-1, 2) >= 0).all(-1).any()):
                raise ValueError(f'handler {self.name!r}: no pair has both ends matched to '
                                 f'data keypoints; pairs {pairs}; matched '
                                 f'{self.match.model_names}')
        cfg = dict(self.loss_cfg)
        cfg['pairs'] = [[2 * p, 2 * p + 1] for p in range(len(pairs))]
        if self.target_lengths is not None:
            cfg['target_lengths'] = self.target_lengths
        self.loss = self._make_loss(cfg)
        self._is_setup = True

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        pts = self.points(output, params)
        pts = pts.index_select(1, self.point_index.to(pts.device))      # (B, 2P, 3)
        if self.target_lengths is not None:
            return self.loss(pts)
        obs = observations.get(self.key)
        if obs is None:
            raise KeyError(f'handler {self.name!r}: measured target lengths need '
                           f'observations[{self.key!r}] (or give target_lengths)')
        idx = self.obs_index.to(pts.device)
        sel = obs.to(pts).index_select(1, idx.clamp_min(0))
        sel = torch.where((idx >= 0)[None, :, None], sel, torch.full_like(sel, float('nan')))
        return self.loss(pts, observed=sel)


__all__ = ['LimbLengthHandler']
