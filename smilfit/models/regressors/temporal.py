"""Video: a temporal regressor over clips and test-time adaptation to one video.

**Clip batches** have a frame axis T after the batch axis: ``inputs`` (B, T, 3, H, W)
(single view) or (B, T, C, 3, H, W), and every per-frame tensor of ``data_samples``
(B, T, ...) (``keypoints_2d`` (B, T, C, N, 2), ``params`` entries (B, T, ...), ...);
optional ``frame_valid`` (B, T) marks usable frames. Per-frame metadata lists are not
carried into predictions (one prediction per frame, clip-major: index ``b * T + t``).

:class:`TemporalRegressor` encodes every frame like its frame model (backbone, fusion),
runs a temporal module (a bidirectional GRU or a transformer) over the per-frame fused
features of each clip and adds its output (zero at initialisation, so training starts
from the per-frame model) to the frame's tokens and features before the head. Besides
the frame losses it has temporal smoothness terms (``TemporalSmoothnessLoss`` from
``LOSSES``) on predicted joints / keypoints (in body lengths) or parameters.

:func:`adapt_to_video` fine-tunes a regressor on one video with sparse annotations
(SMAL4V-style online adaptation): keypoint and silhouette losses only on the annotated
frames, temporal losses on all of them, no ground-truth parameters.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from smilfit.registry.build import build_module
from smilfit.registry import LOSSES, MODELS

from .base import BodyRegressor

#: Temporal terms by default: joint velocity and acceleration (in body lengths).
DEFAULT_TEMPORAL_LOSSES = dict(
    smooth_joints=dict(target='joints', loss=dict(type='TemporalSmoothnessLoss',
                                                  velocity_weight=1.0,
                                                  acceleration_weight=1.0,
                                                  normalize='mean')))
#: Targets read from the body-model output (anything else is a parameter).
OUTPUT_TARGETS = ('joints', 'keypoints', 'joints_kin')


@MODELS.register_module()
class TemporalEncoder(nn.Module):
    """Context over the frames of a clip, added to every frame's features.

    Args:
        dim: feature size D (set by the regressor).
        kind: ``'gru'`` (bidirectional) or ``'transformer'``.
        num_layers: recurrent / encoder layers.
        num_heads: attention heads (transformer).
        max_frames: longest clip (transformer position embeddings).
    """

    def __init__(self, dim: int, kind: str = 'gru', num_layers: int = 1, num_heads: int = 4,
                 max_frames: int = 128) -> None:
        super().__init__()
        if kind not in ('gru', 'transformer'):
            raise ValueError(f"temporal kind must be 'gru' or 'transformer', got {kind!r}")
        self.kind, self.dim, self.max_frames = kind, int(dim), int(max_frames)
        if kind == 'gru':
            self.rnn = nn.GRU(dim, dim // 2 if dim >= 2 else 1, num_layers, batch_first=True,
                              bidirectional=True)
            inner = 2 * (dim // 2 if dim >= 2 else 1)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(max_frames, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, 0.0, batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            inner = dim
        self.out = nn.Linear(inner, dim)
        nn.init.zeros_(self.out.weight)       # start as the per-frame model
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, D) per-frame features (+ (B, T) bool validity) -> (B, T, D) context."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f'TemporalEncoder: expected (B, T, {self.dim}), got '
                             f'{tuple(x.shape)}')
        if valid is not None:
            x = x * valid.to(x.dtype)[..., None]
        if self.kind == 'gru':
            h, _ = self.rnn(x)
        else:
            T = x.shape[1]
            if T > self.max_frames:
                raise ValueError(f'TemporalEncoder: clip of {T} frames > max_frames='
                                 f'{self.max_frames}')
            mask = None if valid is None else ~valid.to(torch.bool)
            if mask is not None:
                mask = mask & ~mask.all(1, keepdim=True)     # keep an all-invalid clip defined
            h = self.encoder(x + self.pos_embed[:T], src_key_padding_mask=mask)
        return self.out(h)


def flatten_clip(inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]],
                 num_views: int) -> Tuple[torch.Tensor, Dict[str, Any], Tuple[int, int]]:
    """Clip batch -> frame batch (B * T, ...); returns ``(inputs, samples, (B, T))``.

    Tensors whose leading dims are (B, T) are reshaped (``params`` entries too); other
    entries (metadata) are dropped. ``frame_valid`` (B, T) is kept as ``clip_frame_valid``.
    """
    want = 5 if num_views == 1 else 6
    if num_views == 1 and inputs.ndim == 6 and inputs.shape[2] == 1:
        inputs = inputs[:, :, 0]
    if inputs.ndim != want:
        raise ValueError(f'clip inputs must be (B, T, {"" if num_views == 1 else "C, "}3, H, '
                         f'W), got {tuple(inputs.shape)}')
    B, T = inputs.shape[:2]
    flat_inputs = inputs.flatten(0, 1)
    out: Dict[str, Any] = {}
    for key, value in (data_samples or {}).items():
        if key == 'params' and isinstance(value, Mapping):
            out['params'] = {k: v.flatten(0, 1) for k, v in value.items()
                             if isinstance(v, torch.Tensor) and v.shape[:2] == (B, T)}
        elif key == 'frame_valid':
            out['clip_frame_valid'] = value.reshape(B, T).to(torch.bool)
        elif isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[:2] == (B, T):
            out[key] = value.flatten(0, 1)
    out['clip_shape'] = (B, T)
    return flat_inputs, out, (B, T)


@MODELS.register_module()
class TemporalRegressor(BodyRegressor):
    """A frame regressor (single or multi-view) with temporal context and losses.

    Args:
        temporal: :class:`TemporalEncoder` options (``kind``, ``num_layers``, ...).
        temporal_losses: ``{name: dict(target=..., loss=LOSSES config)}``; ``target`` is
            ``'joints'``, ``'keypoints'``, ``'joints_kin'`` (in body lengths) or a
            parameter (``'body_pose'``, ``'global_orient'``: rotation matrices;
            ``'transl'``: body lengths; ``'betas'``). Their weights are in
            ``loss_weights`` under the same names (default 1).
        neck: as :class:`~.multi_view.MultiViewRegressor` when ``num_views > 1``.
        other args: see :class:`~.base.BodyRegressor`.
    """

    def __init__(self, *args, temporal: Optional[dict] = None,
                 temporal_losses: Optional[Mapping[str, dict]] = None, num_views: int = 1,
                 neck=None, camera: Optional[dict] = None, **kwargs) -> None:
        specs = copy.deepcopy(dict(DEFAULT_TEMPORAL_LOSSES if temporal_losses is None
                                   else temporal_losses))
        self._temporal_specs = specs
        if num_views > 1 and neck is None:
            neck = dict(type='CrossViewFusion', dim=256, depth=2, num_heads=8)
        if neck is False:
            neck = None
        default_cam = (dict(model='perspective', init='calibrated', predict=False)
                       if num_views > 1 else
                       dict(model='perspective', init='default', predict_rotation=False))
        camera = dict(default_cam, **(camera or {}))
        super().__init__(*args, num_views=num_views, neck=neck, camera=camera, **kwargs)
        self.temporal = MODELS.build(dict(dict(type='TemporalEncoder'), **(temporal or {}),
                                          dim=self.feature_dim))
        self.temporal_losses = nn.ModuleDict()
        self.temporal_targets: Dict[str, str] = {}
        for name, spec in specs.items():
            spec = dict(spec)
            self.temporal_targets[name] = str(spec.pop('target', 'joints'))
            loss = spec.pop('loss', dict(type='TemporalSmoothnessLoss'))
            if spec:
                raise KeyError(f'temporal_losses[{name!r}]: unknown keys {sorted(spec)}')
            self.temporal_losses[name] = build_module(LOSSES, loss, f'temporal loss {name!r}')

    def _extra_loss_weights(self) -> Dict[str, float]:
        clash = set(self._temporal_specs) & (set(self.loss_weights) if hasattr(
            self, 'loss_weights') else set())
        if clash:
            raise ValueError(f'temporal loss names {sorted(clash)} clash with other losses')
        return {name: 1.0 for name in self._temporal_specs}

    # ------------------------------------------------------------------ clips
    def predictions(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]]
                    ) -> Dict[str, Any]:
        """Frame-batch ``inputs`` with ``data_samples['clip_shape'] = (B, T)`` (see
        :func:`flatten_clip`)."""
        if not data_samples or 'clip_shape' not in data_samples:
            raise ValueError('TemporalRegressor works on clips: call it with (B, T, ...) '
                             'inputs (forward/loss/predict flatten them)')
        B, T = data_samples['clip_shape']
        enc = dict(self.encode(inputs, data_samples))
        valid = data_samples.get('clip_frame_valid')
        ctx = self.temporal(enc['fused'].reshape(B, T, -1), valid).reshape(B * T, -1)
        enc['memory'] = enc['memory'] + ctx[:, None]
        enc['views'] = enc['views'] + ctx[:, None]
        enc['fused'] = enc['fused'] + ctx
        return dict(enc=enc, iterations=self.run_head(enc, data_samples))

    def loss(self, inputs: torch.Tensor, data_samples: Mapping[str, Any]
             ) -> Dict[str, torch.Tensor]:
        if 'clip_shape' not in data_samples:
            inputs, data_samples, _ = flatten_clip(inputs, data_samples, self.num_views)
        return super().loss(inputs, data_samples)

    def predict(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None
                ) -> List[Dict[str, Any]]:
        if not data_samples or 'clip_shape' not in data_samples:
            inputs, data_samples, _ = flatten_clip(inputs, data_samples, self.num_views)
        return super().predict(inputs, data_samples)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None,
                mode: str = 'tensor'):
        if mode == 'tensor' and (not data_samples or 'clip_shape' not in data_samples):
            inputs, data_samples, _ = flatten_clip(inputs, data_samples, self.num_views)
        return super().forward(inputs, data_samples, mode)

    def sequence(self, name: str, decoded: Mapping[str, Any], B: int, T: int) -> torch.Tensor:
        """(B, T, ...) the sequence the temporal term ``name`` smooths."""
        target = self.temporal_targets[name]
        if target in OUTPUT_TARGETS:
            x = getattr(decoded['output'], target) / self.body_length
        elif target in decoded['params']:
            x = decoded['params'][target]
            if target == 'transl':
                x = x / self.body_length
        else:
            raise KeyError(f'temporal loss {name!r}: unknown target {target!r}; use one of '
                           f'{OUTPUT_TARGETS} or a parameter {sorted(decoded["params"])}')
        return x.reshape((B, T) + tuple(x.shape[1:]))

    def extra_losses(self, res: Mapping[str, Any], data_samples: Mapping[str, Any],
                     decoded: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        B, T = data_samples['clip_shape']
        valid = data_samples.get('clip_frame_valid')
        out = {}
        for name, loss in self.temporal_losses.items():
            w = self.loss_weights.get(name, 0.0)
            if w <= 0 or T < 2:
                continue
            out[f'loss_{name}'] = loss(self.sequence(name, decoded, B, T), valid).mean() * w
        return out


# ---------------------------------------------------------------------- adaptation
def _mask_unannotated(samples: Dict[str, Any], annotated: torch.Tensor) -> Dict[str, Any]:
    """Hide the observations of frames that are not annotated (keys broadcast from the
    leading dims of ``annotated``)."""
    out = dict(samples)
    lead = annotated.ndim

    def expand(x):
        return annotated.reshape(annotated.shape + (1,) * (x.ndim - lead)).to(x.device)

    for key in ('visible', 'mask_valid'):
        if out.get(key) is not None:
            out[key] = out[key].to(torch.bool) & expand(out[key])
    if out.get('confidence') is not None:
        out['confidence'] = out['confidence'] * expand(out['confidence']).to(
            out['confidence'].dtype)
    if out.get('keypoints_3d') is not None:
        kp = out['keypoints_3d']
        out['keypoints_3d'] = torch.where(expand(kp), kp, torch.full_like(kp, float('nan')))
    out.pop('params', None)            # in the wild: no ground-truth parameters
    return out


def adapt_to_video(model: BodyRegressor, clip_batch: Mapping[str, Any],
                   annotated_mask: Union[torch.Tensor, Sequence[bool]], n_steps: int = 20,
                   lr: float = 1e-4, parameters: Union[str, Iterable[nn.Parameter]] = 'all',
                   loss_weights: Optional[Mapping[str, float]] = None,
                   progress: bool = False) -> List[float]:
    """Fine-tune ``model`` in place on one video with sparse annotations.

    Keypoint/silhouette observations count only on the annotated frames (the others are
    marked invisible), temporal losses (a :class:`TemporalRegressor`'s) on all frames,
    and ground-truth parameters are never used. The model runs in eval mode (fixed
    batch-norm statistics, no dropout) with gradients on; Adam updates ``parameters``.

    Args:
        model: a :class:`~.base.BodyRegressor` (a :class:`TemporalRegressor` for clips).
        clip_batch: ``dict(inputs, data_samples)`` as from the dataloader: a clip batch
            (B, T, ...) for a temporal regressor, a frame batch (T, ...) otherwise.
        annotated_mask: (B, T) (or (T,) for one clip / a frame batch) booleans.
        n_steps: optimisation steps.
        lr: Adam learning rate.
        parameters: ``'all'`` (every trainable parameter), ``'head'`` (the head and
            temporal module only) or an iterable of parameters.
        loss_weights: temporary ``{term: weight}`` overrides (restored afterwards).
        progress: tqdm progress bar.

    Returns:
        The total loss before each step (``n_steps`` floats).
    """
    from tqdm import tqdm
    data = model.data_preprocessor(dict(clip_batch), False)
    inputs, samples = data['inputs'], dict(data['data_samples'])
    mask = torch.as_tensor(annotated_mask, dtype=torch.bool, device=inputs.device)
    temporal = isinstance(model, TemporalRegressor)
    lead = inputs.shape[:2] if temporal else inputs.shape[:1]
    if temporal and mask.ndim == 1:
        mask = mask[None].expand(lead[0], -1)
    if tuple(mask.shape) != tuple(lead):
        raise ValueError(f'annotated_mask must be {tuple(lead)} for inputs '
                         f'{tuple(inputs.shape)}, got {tuple(mask.shape)}')
    if not bool(mask.any()):
        raise ValueError('annotated_mask marks no frame as annotated')
    samples = _mask_unannotated(samples, mask)
    if parameters == 'all':
        params = [p for p in model.parameters() if p.requires_grad]
    elif parameters == 'head':
        mods = [model.head] + ([model.temporal] if temporal else [])
        params = [p for m in mods for p in m.parameters() if p.requires_grad]
    else:
        params = list(parameters)
    if not params:
        raise ValueError('adapt_to_video: no trainable parameters selected')
    saved = dict(model.loss_weights)
    was_training = model.training
    history: List[float] = []
    try:
        for name, w in dict(loss_weights or {}).items():
            model.set_loss_weight(name, w)
        if 'param' in model.loss_weights:
            model.set_loss_weight('param', 0.0)
        model.eval()
        optim = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for _ in tqdm(range(int(n_steps)), desc='adapt', disable=not progress):
                losses = model.loss(inputs, samples)
                total = sum(losses.values())
                optim.zero_grad(set_to_none=True)
                total.backward()
                optim.step()
                history.append(float(total.detach()))
    finally:
        model.loss_weights.clear()
        model.loss_weights.update(saved)
        model.train(was_training)
    return history


__all__ = ['TemporalRegressor', 'TemporalEncoder', 'flatten_clip', 'adapt_to_video',
           'DEFAULT_TEMPORAL_LOSSES']
