"""What every keypoint handler shares: :class:`KeypointHandlerBase` (the point source,
keypoints matched by name through :mod:`smilfit.body_models.keypoint_naming`, per-keypoint
offsets and importance weights by name) and :func:`model_points`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from smilfit.body_models.keypoint_naming import (OFFSET_FRAMES, POINT_SOURCES, KeypointMatch,
                                                 lookup_model_names, match_keypoints,
                                                 model_point_names, rotate_offsets,
                                                 source_carriers)
from .base import BaseHandler, LossSpec, get_param

def model_points(output, params: Mapping[str, Any], source: str, handler: str,
                 offsets_key: Optional[str] = 'auto', offsets_frame: str = 'world',
                 carriers: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, N, 3) model points (all of them) plus the optional per-point offsets.

    ``params[offsets_key]`` (B or 1, N, 3) are offsets added to the points (e.g. an ear
    tip that is no joint, fitted per session): in world axes (``offsets_frame='world'``)
    or in the axes of each point's carrying joint (``'joint'``: they turn and scale with
    it; ``carriers`` from :func:`source_carriers`). ``'auto'`` reads
    ``'keypoint_offsets'`` for keypoints and nothing for joints.
    """
    pts = output.keypoints if source == 'keypoints' else output.joints
    if pts is None:
        raise ValueError(f'handler {handler!r}: the body model output has no {source} '
                         "(define keypoints on the model, or use source='joints')")
    if offsets_key == 'auto':
        offsets_key = 'keypoint_offsets' if source == 'keypoints' else None
    off = get_param(params, offsets_key) if offsets_key else None
    if off is not None:
        if off.ndim != 3 or off.shape[-2:] != pts.shape[-2:] or off.shape[0] not in (
                1, pts.shape[0]):
            raise ValueError(f'handler {handler!r}: params[{offsets_key!r}] must be '
                             f'(B or 1, {pts.shape[1]}, 3) for the model {source}, got '
                             f'{tuple(off.shape)}')
        if offsets_frame == 'joint':
            if carriers is None:
                raise ValueError(f'handler {handler!r}: joint-frame offsets need the '
                                 'carrying joints (source_carriers)')
            off = rotate_offsets(off, output.joint_transforms, carriers)
        pts = pts + off.to(pts)
    return pts


class KeypointHandlerBase(BaseHandler):
    """Shared set-up of keypoint handlers: names, lookup, offsets, importance weights.

    Args:
        name, loss, weight, check_finite: see :class:`BaseHandler`.
        source: ``'keypoints'`` (``output.keypoints``, ``model.keypoint_names``) or
            ``'joints'`` (``output.joints``, ``model.joint_names``).
        keypoints: optional subset of model names to use (default: all that match).
        joint_lookup: model name -> data name; overrides ``data_info['joint_lookup']``.
        keypoint_weights: optional ``{name: importance}`` by model or data name
            (default 1); a name that is not matched is an error.
        offsets_key: params key of per-point offsets (``None`` disables them);
            ``'auto'``: ``'keypoint_offsets'`` for ``source='keypoints'``, none for joints
            (so keypoint offsets fitted for other handlers never reach a joint handler).
        offsets_frame: ``'world'`` (offsets in world axes) or ``'joint'`` (in the axes of
            the joint carrying each point, so they turn and scale with the body: markers
            on the skin, ear tips, labelled a fixed distance from a joint).
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 source: str = 'keypoints', keypoints: Optional[Sequence[str]] = None,
                 joint_lookup: Optional[Mapping[str, Optional[str]]] = None,
                 keypoint_weights: Optional[Mapping[str, float]] = None,
                 offsets_key: Optional[str] = 'auto', offsets_frame: str = 'world',
                 check_finite: bool = False) -> None:
        super().__init__(name, loss, weight, check_finite)
        if source not in POINT_SOURCES:
            raise ValueError(f'handler {name!r}: source must be one of {POINT_SOURCES}, '
                             f'got {source!r}')
        if offsets_frame not in OFFSET_FRAMES:
            raise ValueError(f'handler {name!r}: offsets_frame must be one of '
                             f'{OFFSET_FRAMES}, got {offsets_frame!r}')
        if keypoint_weights is not None and not isinstance(keypoint_weights, Mapping):
            raise TypeError(f'handler {name!r}: keypoint_weights must be a dict '
                            '{keypoint name: weight} (weights are matched by name)')
        self.source = source
        self.keypoint_subset = None if keypoints is None else [str(k) for k in keypoints]
        self.joint_lookup = None if joint_lookup is None else dict(joint_lookup)
        self.keypoint_weight_spec = (None if keypoint_weights is None
                                     else {str(k): float(v)
                                           for k, v in keypoint_weights.items()})
        if offsets_key == 'auto':
            offsets_key = 'keypoint_offsets' if source == 'keypoints' else None
        self.offsets_key = offsets_key
        self.offsets_frame = offsets_frame
        self.match: Optional[KeypointMatch] = None
        self.register_buffer('carriers', None, persistent=False)
        self.register_buffer('model_index', None, persistent=False)
        self.register_buffer('data_index', None, persistent=False)
        self.register_buffer('importance', None, persistent=False)

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        data_info = data_info or {}
        if 'keypoint_names' not in data_info:
            raise KeyError(f'handler {self.name!r}: data_info has no "keypoint_names" '
                           f'(got keys {sorted(data_info)})')
        lookup = self.joint_lookup if self.joint_lookup is not None else data_info.get(
            'joint_lookup')
        match = match_keypoints(model_point_names(body_model, self.source),
                                data_info['keypoint_names'], lookup,
                                self.keypoint_subset, what=self.source,
                                lookup_names=lookup_model_names(body_model))
        self.match = match
        device = getattr(body_model, 'device', None)
        self.model_index = match.model_index.to(device)
        self.data_index = match.data_index.to(device)
        self.importance = self._importance(match, device)
        self.carriers = (source_carriers(body_model, self.source).to(device)
                         if self.offsets_frame == 'joint' else None)
        super().setup(body_model, data_info)

    def _importance(self, match: KeypointMatch, device) -> Optional[torch.Tensor]:
        spec = self.keypoint_weight_spec
        if spec is None:
            return None
        w = [1.0] * len(match)
        known = set(match.model_names) | set(match.data_names)
        unknown = [n for n in spec if n not in known]
        if unknown:
            raise KeyError(f'handler {self.name!r}: keypoint_weights name(s) {unknown} are '
                           f'not matched keypoints; matched (model -> data): '
                           f'{list(zip(match.model_names, match.data_names))}')
        for i, (m, d) in enumerate(zip(match.model_names, match.data_names)):
            if m in spec:
                w[i] = spec[m]
            elif d in spec:
                w[i] = spec[d]
        return torch.as_tensor(w, dtype=torch.float64, device=device)

    # -------------------------------------------------------------- helpers
    def points(self, output, params: Mapping[str, Any]) -> torch.Tensor:
        """(B, N, 3) all model points of the handler's source, offsets added."""
        return model_points(output, params, self.source, self.name, self.offsets_key,
                            self.offsets_frame, self.carriers)

    def matched_points(self, output, params: Mapping[str, Any]) -> torch.Tensor:
        """(B, M, 3) matched model points (offsets added)."""
        pts = self.points(output, params)
        return pts.index_select(1, self.model_index.to(pts.device))

    def pool_index(self, body_model) -> torch.Tensor:
        """(M,) indices of the matched points in the model's point pool (its joints,
        then its vertex keypoint readouts; see :mod:`smilfit.registrants.solver.point_jacobian`)."""
        if self.source == 'joints':
            return self.model_index
        return body_model.keypoint_source.to(self.model_index.device)[self.model_index]

    def local_offsets(self, params: Mapping[str, Any]) -> Optional[torch.Tensor]:
        """(B or 1, M, 3) joint-frame offsets of the matched points, or ``None`` (no
        offsets, or world-frame ones). Second-order stages attach these to the model's
        points, so that their Jacobian sees them turn with the carrying joint."""
        if self.offsets_frame != 'joint' or not self.offsets_key:
            return None
        off = get_param(params, self.offsets_key)
        if off is None:
            return None
        return off.index_select(1, self.model_index.to(off.device))

    def offset_points(self, points: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
        """(B, M, 3) matched model points plus their world-frame offsets (if any).

        Joint-frame offsets are not added here: the caller's points already carry them
        (:meth:`local_offsets`, attached by the Levenberg-Marquardt problem)."""
        key = self.offsets_key
        if key == 'auto':
            key = 'keypoint_offsets' if self.source == 'keypoints' else None
        off = get_param(params, key) if key and self.offsets_frame == 'world' else None
        if off is None:
            return points
        return points + off.to(points).index_select(1, self.model_index.to(points.device))

    def select_data(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Gather the matched data keypoints along ``dim`` of an observation tensor."""
        return x.index_select(dim, self.data_index.to(x.device))

    def importance_like(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.importance is None else self.importance.to(x)

    def extra_repr(self) -> str:
        n = 'unset' if self.match is None else len(self.match)
        return super().extra_repr() + f', source={self.source!r}, matched={n}'


__all__ = ['model_points', 'KeypointHandlerBase']
