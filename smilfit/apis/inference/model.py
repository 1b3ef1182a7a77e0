"""The model side of inference: :func:`load_regressor` (a regressor and its config from a
checkpoint) and :func:`build_test_pipeline` (the transforms it was tested with)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

from smilfit.registry.build import build_module
from .common import InferenceError, PathLike
from smilfit.apis.evaluation import load_checkpoint_config
from smilfit.engine.checkpoint_io import checkpoint_state_dict, load_checkpoint_file
from smilfit.registry import MODELS, TRANSFORMS
from smilfit.utils import register_all_modules


def load_regressor(checkpoint: PathLike, config: Optional[Union[PathLike, Any]] = None,
                   device: str = 'cpu', cfg_options: Optional[Mapping[str, Any]] = None):
    """Build a regressor and load its weights.

    Args:
        checkpoint: a checkpoint of ``tools/train.py`` (or None with a config: random
            weights, for pipeline checks).
        config: config file or ``Config``; default: the config in the checkpoint's meta.
        device: torch device.
        cfg_options: config overrides (``merge_from_dict``).

    Returns:
        ``(model, cfg)``: the model in eval mode on ``device`` and its config; the model's
        ``dataset_meta`` is its training dataset's metadata saved in the checkpoint
        (``input_crops``: how the training images were cropped; empty without one).

    Raises:
        DataKeypointsError: the checkpoint's training data had other keypoints than the
            model built from the config (e.g. another body model set by ``cfg_options``).
    """
    from mmengine.config import Config
    from mmengine.runner.checkpoint import load_state_dict

    register_all_modules(init_default_scope=True)
    if config is None:
        if checkpoint is None:
            raise InferenceError('give a checkpoint, a config, or both')
        cfg = load_checkpoint_config(checkpoint)
    elif isinstance(config, (str, os.PathLike)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config {config} does not exist')
        cfg = Config.fromfile(str(config))
    else:
        cfg = config
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if cfg.get('model') is None:
        raise InferenceError('the config has no model (a regressor) to run')
    model = MODELS.build(cfg.model)
    # What the training data said about itself (mmengine saves the training dataset's
    # metainfo with every checkpoint): how its images were cropped, among others.
    model.dataset_meta = {}
    if checkpoint is not None:
        ckpt = load_checkpoint_file(checkpoint)
        state = checkpoint_state_dict(ckpt, checkpoint)
        load_state_dict(model, state, strict=False, logger='silent')
        meta = ckpt.get('meta')
        dataset_meta = meta.get('dataset_meta') if isinstance(meta, Mapping) else None
        model.dataset_meta = dict(dataset_meta) if isinstance(dataset_meta, Mapping) else {}
        # A body model other than the one trained (e.g. set by cfg_options) would take the
        # weights that fit and predict nonsense: refuse it, naming both keypoint lists.
        trained = model.dataset_meta.get('keypoint_names')
        if trained is not None and hasattr(model, 'check_data'):
            model.check_data(list(trained), f"the checkpoint's training data ({checkpoint})")
    return model.to(device).eval(), cfg


def build_test_pipeline(cfg) -> List[Any]:
    """The transforms the model was tested with: ``test_dataloader.dataset.pipeline``
    (else ``val_dataloader``'s, else ``test_pipeline``), without dataset-only steps;
    ``[PackInputs]`` when the config has none."""
    spec = None
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader is not None and loader.get('dataset', {}).get('pipeline') is not None:
            spec = loader['dataset']['pipeline']
            break
    if spec is None:
        spec = cfg.get('test_pipeline') or [dict(type='PackInputs')]
    out = [build_module(TRANSFORMS, t, 'transform') for t in spec]
    if not any(type(t).__name__ == 'PackInputs' for t in out):
        out.append(TRANSFORMS.build(dict(type='PackInputs')))
    return out
