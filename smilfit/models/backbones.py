"""Image backbones through timm: any timm model by name, weights from a local file only.

:class:`TimmBackbone` wraps ``timm.create_model(name, pretrained=False, num_classes=0)``
and returns both a pooled feature per image and the spatial/patch tokens a transformer
decoder cross-attends over:

- CNNs (ResNet-50/101/152, ...): ``forward_features`` gives (B, D, h, w); the tokens are
  its h * w cells (B, h * w, D), the pooled feature timm's global pooling (B, D);
- ViTs (ViT-B/L, ...): ``forward_features`` gives (B, prefix + N, D); the tokens are the
  N patch tokens (prefix tokens such as the class token dropped), the pooled feature
  timm's head pooling (class token or mean, as the model is configured).

Weights never come from a hub at run time: ``pretrained`` must stay False and
``checkpoint`` names a local file (a plain state dict, or one under ``'state_dict'`` /
``'model'``), loaded with ``weights_only=True``; classifier weights are dropped and any
other missing or unexpected key is an error unless ``strict=False``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from smilfit.registry import MODELS
from smilfit.engine.checkpoint_io import CheckpointError, load_checkpoint_file

FrozenSpec = Union[None, bool, int, Sequence[str]]


def _load_local_state_dict(path: str) -> Dict[str, torch.Tensor]:
    if not isinstance(path, (str, os.PathLike)) or '://' in str(path):
        raise ValueError(f'checkpoint must be a local file path, got {path!r} (weights are '
                         'never downloaded at run time; download them once and pass the file)')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'backbone checkpoint {path!r} does not exist')
    if str(path).endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except SafetensorError as err:  # its message names no file
            raise CheckpointError(f'{path} is truncated or not a safetensors file '
                                  f'({err})') from None
    else:
        state = load_checkpoint_file(path)
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f'{path}: expected a state dict, got {type(state).__name__}')
    return state


@MODELS.register_module()
class TimmBackbone(nn.Module):
    """A timm model as a feature extractor: pooled features and tokens.

    Args:
        model_name: any timm model name, e.g. ``'resnet50'``, ``'resnet101'``,
            ``'resnet152'``, ``'vit_base_patch16_224'``, ``'vit_large_patch16_224'``.
        checkpoint: local weights file (``.pth``/``.pt``/``.bin``/``.safetensors``).
        pretrained: must be False (kept for config compatibility: True is an error
            naming the ``checkpoint`` argument, since nothing is downloaded).
        strict: error on missing/unexpected keys in ``checkpoint`` (classifier keys
            excepted); with False they are logged.
        frozen: ``None``/``False`` (all trainable), ``True`` (all frozen), an int ``n``
            (the first ``n`` top-level child modules frozen, e.g. ResNet's ``conv1``,
            ``bn1``, ...; ViT's ``patch_embed``, ...) or a list of parameter-name
            prefixes (``['patch_embed', 'blocks.0', 'blocks.1']``). Frozen modules stay
            in eval mode (batch-norm statistics fixed) during training.
        model_kwargs: passed to ``timm.create_model`` (e.g. ``img_size=64`` for ViTs,
            ``drop_path_rate``).

    Attributes:
        out_dim: D, the feature size of the pooled feature and of every token.
    """

    def __init__(self, model_name: str, checkpoint: Optional[str] = None,
                 pretrained: bool = False, strict: bool = True, frozen: FrozenSpec = None,
                 model_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        import timm
        if pretrained:
            raise ValueError('TimmBackbone never downloads weights: keep pretrained=False and '
                             'pass checkpoint="/path/to/weights.pth" (a local file)')
        kwargs = dict(model_kwargs or {})
        kwargs.pop('pretrained', None)
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0,
                                           **kwargs)
        except RuntimeError as err:
            raise ValueError(f'timm has no model {model_name!r} (see timm.list_models())'
                             ) from err
        self.model_name = model_name
        self.out_dim = int(self.model.num_features)
        self.num_prefix_tokens = int(getattr(self.model, 'num_prefix_tokens', 0) or 0)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint, strict=strict)
        self.frozen_prefixes = self._frozen_prefixes(frozen)
        for name, param in self.model.named_parameters():
            if any(name == p or name.startswith(p + '.') for p in self.frozen_prefixes):
                param.requires_grad_(False)

    # ------------------------------------------------------------------ weights
    def load_checkpoint(self, path: str, strict: bool = True) -> None:
        """Load ``path`` (a local file) into the timm model; classifier keys are dropped."""
        state = _load_local_state_dict(path)
        own = self.model.state_dict()

        def strip(key: str) -> str:
            # Checkpoints of wrappers (this class, DDP, a whole regressor) nest the keys.
            for prefix in ('module.', 'backbone.model.', 'backbone.', 'model.'):
                if key.startswith(prefix) and key[len(prefix):] in own:
                    return key[len(prefix):]
            return key

        state = {strip(k): v for k, v in state.items()}
        head_keys = [k for k in state if k.split('.')[0] in ('fc', 'head', 'classifier')
                     and k not in own]
        for k in head_keys:
            state.pop(k)
        result = self.model.load_state_dict(state, strict=False)
        problems = list(result.missing_keys) + list(result.unexpected_keys)
        if problems and strict:
            raise KeyError(f'backbone checkpoint {path!r} does not fit {self.model_name}: '
                           f'missing {result.missing_keys[:10]}, unexpected '
                           f'{result.unexpected_keys[:10]} (pass strict=False to ignore)')
        if problems:
            from mmengine.logging import print_log
            print_log(f'TimmBackbone({self.model_name}): {path}: missing '
                      f'{result.missing_keys}, unexpected {result.unexpected_keys}',
                      logger='current', level=30)

    def _frozen_prefixes(self, frozen: FrozenSpec) -> list:
        children = [name for name, _ in self.model.named_children()]
        if frozen is None or frozen is False:
            return []
        if frozen is True:
            return children
        if isinstance(frozen, int):
            if not 0 <= frozen <= len(children):
                raise ValueError(f'frozen={frozen}: {self.model_name} has {len(children)} '
                                 f'top-level modules {children}')
            return children[:frozen]
        prefixes = [str(p) for p in frozen]
        names = [n for n, _ in self.model.named_parameters()]
        unknown = [p for p in prefixes
                   if not any(n == p or n.startswith(p + '.') for n in names)]
        if unknown:
            raise KeyError(f'frozen prefixes {unknown} match no parameter of '
                           f'{self.model_name}; top-level modules: {children}')
        return prefixes

    def train(self, mode: bool = True) -> 'TimmBackbone':
        super().train(mode)
        if mode and self.frozen_prefixes:
            for name, module in self.model.named_modules():
                if name and any(name == p or name.startswith(p + '.')
                                for p in self.frozen_prefixes):
                    module.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Features of a batch of images.

        Args:
            images: (B, 3, H, W) normalised images.

        Returns:
            ``pooled`` (B, D) and ``tokens`` (B, N, D) (N = h * w cells of a CNN's last
            feature map, or the ViT's patch tokens); never empty.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'TimmBackbone expects images (B, 3, H, W), got '
                             f'{tuple(images.shape)}')
        feats = self.model.forward_features(images)
        pooled = self.model.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:                       # CNN (B, D, h, w) -> (B, h*w, D)
            tokens = feats.flatten(2).transpose(1, 2)
        elif feats.ndim == 3:                     # ViT-like (B, prefix + N, D)
            tokens = feats[:, self.num_prefix_tokens:] if feats.shape[1] > \
                self.num_prefix_tokens else feats
        else:
            raise RuntimeError(f'{self.model_name}: unsupported feature shape '
                               f'{tuple(feats.shape)} from forward_features')
        if pooled.ndim != 2:
            pooled = pooled.flatten(1)
        return dict(pooled=pooled, tokens=tokens)

    def extra_repr(self) -> str:
        return (f'model_name={self.model_name!r}, out_dim={self.out_dim}, '
                f'frozen={self.frozen_prefixes}')


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (for logs and tests)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ['TimmBackbone', 'count_trainable']
