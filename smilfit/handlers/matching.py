"""Keypoint matching by name, in one place for every keypoint handler.

Model keypoints (``SMILModel.keypoint_names``, or ``joint_names`` for handlers reading
joints) and data keypoints (``data_info['keypoint_names']``) are matched by *name*,
never by position: through ``joint_lookup`` (model name -> data name) when given, else
by identical names. :class:`KeypointHandlerBase` adds what the 2D, 3D and limb-length
handlers share: the point source, per-keypoint offsets and importance weights by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

import torch

from .base import BaseHandler, LossSpec, get_param

#: Where keypoint handlers read model points from.
POINT_SOURCES = ('keypoints', 'joints')


@dataclass
class KeypointMatch:
    """The result of :func:`match_keypoints` (M matched pairs, in model order).

    Attributes:
        model_names: (M,) matched model names.
        data_names: (M,) the data names they matched.
        model_index: (M,) int64 indices into the model's names.
        data_index: (M,) int64 indices into the data's names.
        unmatched_model: model names without a data partner.
        unmatched_data: data names no model name matched.
    """

    model_names: List[str]
    data_names: List[str]
    model_index: torch.Tensor
    data_index: torch.Tensor
    unmatched_model: List[str]
    unmatched_data: List[str]

    def __len__(self) -> int:
        return len(self.model_names)


def _check_unique(names: Sequence[str], what: str) -> List[str]:
    names = [str(n) for n in names]
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    if dup:
        raise ValueError(f'{what} are not unique: {sorted(set(dup))}')
    return names


def match_keypoints(model_names: Sequence[str], data_names: Sequence[str],
                    lookup: Optional[Mapping[str, Optional[str]]] = None,
                    subset: Optional[Sequence[str]] = None,
                    what: str = 'keypoints',
                    lookup_names: Optional[Sequence[str]] = None) -> KeypointMatch:
    """Match model names to data names.

    Args:
        model_names: the model's names in tensor order.
        data_names: the data's names in tensor order.
        lookup: optional model name -> data name (``None`` or ``''``: do not match
            that model name). With a lookup only its entries match. Every entry must name
            an existing model point (one of ``lookup_names``) and, unless empty, an
            existing data keypoint: a typo would silently drop the keypoint
            (:func:`smilfit.datasets.joint_lookup.check_joint_lookup`).
        subset: optional model names to keep (every one must exist in the model).
        what: the kind of name, for messages (``'keypoints'``, ``'joints'``).
        lookup_names: every model name a lookup entry may use (default: ``model_names``).
            Handlers pass the body model's joint and keypoint names
            (:func:`lookup_model_names`): one lookup serves handlers reading either, so an
            entry for a joint is skipped by a keypoint handler, not an error.

    Returns:
        :class:`KeypointMatch`.

    Raises:
        ValueError: when nothing matches, or (``JointLookupError``) a lookup entry names
            a point that does not exist (see ``lookup``); the message lists the names at
            fault, the closest existing ones and both name lists.
    """
    model_names = _check_unique(model_names, f'model {what} names')
    data_names = _check_unique(data_names, 'data keypoint names')
    data_pos = {n: i for i, n in enumerate(data_names)}
    if lookup is not None:
        # Imported here: smilfit.datasets pulls in h5py, which handlers need not load.
        from smilfit.datasets.joint_lookup import check_joint_lookup
        check_joint_lookup(lookup, model_names if lookup_names is None else lookup_names,
                           data_names)
    keep = None
    if subset is not None:
        keep = [str(n) for n in subset]
        unknown = [n for n in keep if n not in model_names]
        if unknown:
            raise KeyError(f'unknown model {what} {unknown} in the handler\'s keypoints '
                           f'subset; model {what}: {model_names}')
        keep = set(keep)
    m_idx: List[int] = []
    d_idx: List[int] = []
    for i, name in enumerate(model_names):
        if keep is not None and name not in keep:
            continue
        target = lookup.get(name) if lookup is not None else name
        if target is None or target == '':
            continue
        j = data_pos.get(str(target))
        if j is not None:
            m_idx.append(i)
            d_idx.append(j)
    if not m_idx:
        via = (f' through joint_lookup {dict(lookup)}' if lookup is not None
               else ' by identical names (pass a joint_lookup to map them)')
        raise ValueError(f'no model {what} matched a data keypoint{via}; model {what}: '
                         f'{model_names}; data keypoints: {data_names}')
    matched_model, matched_data = set(m_idx), set(d_idx)
    return KeypointMatch(
        model_names=[model_names[i] for i in m_idx],
        data_names=[data_names[j] for j in d_idx],
        model_index=torch.as_tensor(m_idx, dtype=torch.long),
        data_index=torch.as_tensor(d_idx, dtype=torch.long),
        unmatched_model=[n for i, n in enumerate(model_names)
                         if i not in matched_model and (keep is None or n in keep)],
        unmatched_data=[n for j, n in enumerate(data_names) if j not in matched_data])


def lookup_model_names(body_model) -> List[str]:
    """Every model name a joint lookup may use: the joint names, then the keypoint names
    that are not joint names."""
    joints = list(body_model.joint_names)
    known = set(joints)
    return joints + [n for n in (getattr(body_model, 'keypoint_names', None) or [])
                     if n not in known]


def model_point_names(body_model, source: str) -> List[str]:
    """The names of the points a handler reads: keypoint or joint names."""
    if source == 'keypoints':
        return list(getattr(body_model, 'keypoint_names', []) or [])
    if source == 'joints':
        return list(body_model.joint_names)
    raise ValueError(f'source must be one of {POINT_SOURCES}, got {source!r}')


#: Frames of per-point offsets: world axes, or the axes of the joint carrying the point.
OFFSET_FRAMES = ('world', 'joint')


def source_carriers(body_model, source: str) -> torch.Tensor:
    """(N,) the joint that carries each model point of ``source`` (its own joint, or for
    a vertex keypoint the joint with the largest skinning mass): the frame of
    joint-local offsets."""
    pool = body_model.pool_joints
    if source == 'keypoints':
        return pool[body_model.keypoint_source]
    if source == 'joints':
        return pool[:body_model.num_joints]
    raise ValueError(f'source must be one of {POINT_SOURCES}, got {source!r}')


def rotate_offsets(offsets: torch.Tensor, transforms: torch.Tensor,
                   carriers: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) joint-local offsets seen in the world: ``M_j o`` with ``M_j`` the world
    linear map (rotation and scales) of each point's carrying joint.

    Args:
        offsets: (B or 1, N, 3) offsets in the carrying joint's rest frame (model units).
        transforms: (B, J, 4, 4) world transforms of the joints (``joint_transforms``).
        carriers: (N,) carrying joint of each point.
    """
    maps = transforms[..., :3, :3].index_select(1, carriers.to(transforms.device))
    return torch.einsum('bnij,bnj->bni', maps, offsets.to(maps))


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


__all__ = ['POINT_SOURCES', 'OFFSET_FRAMES', 'KeypointMatch', 'match_keypoints',
           'lookup_model_names', 'model_point_names', 'model_points', 'source_carriers',
           'rotate_offsets',
           'KeypointHandlerBase']
