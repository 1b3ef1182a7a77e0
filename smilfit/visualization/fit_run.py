"""A fitting run read back from its work dir, for everything that shows it (the visuals
of :mod:`.fit_visuals` and the 3D scene of :mod:`.scene`): results, config, the fitted
dataset, and the fit's registrant and body model rebuilt from its config.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from smilfit.body_models.joint_lookup import joint_lookup_dict
from smilfit.body_models.parameters import MODEL_INPUTS as _MODEL_INPUTS
from smilfit.datasets.hdf5.files import read_h5
from smilfit.engine.config_data import check_component_types
from smilfit.registry import REGISTRANTS
from smilfit.utils import register_all_modules

__all__ = ['FitRun', 'load_fit_run', 'resolve_dataset', 'build_registrant', 'model_outputs',
           'frame_range_mask']

PathLike = Union[str, os.PathLike]


@dataclass
class FitRun:
    """A fitting run's results and config, as :func:`load_fit_run` reads them.

    Attributes:
        work_dir: the run's folder.
        params: name -> (S, ...) fitted parameters of the S samples.
        samples: ``index``, ``session``, ``frame`` (S,) arrays.
        losses: handler name -> (S,) final losses.
        metrics: ``total_loss``, ``diverged``, ``reprojection_px`` (S, C) ... arrays.
        vertices: (S, V, 3) when the fit stored them, else None.
        config: ``{'data': ..., 'registrant': ...}`` the fit ran with.
        dataset: the fitted dataset's path as recorded (may be relative).
        stages: stage names.
        history: loss history when the results hold one (see :func:`normalise_history`).
    """

    work_dir: Path
    params: Dict[str, np.ndarray]
    samples: Dict[str, np.ndarray]
    losses: Dict[str, np.ndarray]
    metrics: Dict[str, np.ndarray]
    vertices: Optional[np.ndarray]
    config: Dict[str, Any]
    dataset: Optional[str]
    stages: List[str]
    history: Any = None


def load_fit_run(work_dir: PathLike, config: Optional[Union[PathLike, Mapping]] = None) -> FitRun:
    """Read ``fit_results.h5`` and the fit's config from a work dir.

    Args:
        work_dir: folder holding ``fit_results.h5``.
        config: the fit's config (a ``.py``/``.json`` path or a dict with ``registrant``
            and ``data``). Default: the results' ``config`` attribute (JSON) when they
            have one, else the work dir's ``chunks/config.json``.
    """
    work_dir = Path(work_dir)
    results = work_dir / 'fit_results.h5'
    if not results.is_file():
        raise FileNotFoundError(f'{results}: no fitting results (run tools/fit.py first)')
    with read_h5(results, 'fit results', written_whole=True) as f:
        if f.attrs.get('format') != 'smilfit-fit-results':
            raise ValueError(f'{results}: not a smilfit fitting result')
        group = lambda name: {k: f[name][k][()] for k in f[name]} if name in f else {}  # noqa
        params, samples = group('params'), group('samples')
        losses, metrics = group('losses'), group('metrics')
        vertices = f['vertices'][()] if 'vertices' in f else None
        dataset = f.attrs.get('dataset')
        stages = json.loads(f.attrs.get('stages', '[]'))
        history = json.loads(f.attrs['loss_history']) if 'loss_history' in f.attrs else None
        stored = json.loads(f.attrs['config']) if 'config' in f.attrs else None
    cfg = _load_config(work_dir, config if config is not None else stored)
    return FitRun(work_dir=work_dir, params=params, samples=samples, losses=losses,
                  metrics=metrics, vertices=vertices, config=cfg,
                  dataset=None if dataset is None else str(dataset), stages=stages,
                  history=history)


def _load_config(work_dir: Path, config: Optional[Union[PathLike, Mapping]]) -> Dict[str, Any]:
    """The fit's config. Config data (a mapping, JSON, the results' stored copy) is data
    from wherever the work dir came from: it may name registered components only
    (:func:`~smilfit.engine.config_data.check_component_types`); a Python config file is
    the user's own."""
    source = f'the fit config of {work_dir}'
    if isinstance(config, Mapping):
        cfg = dict(config)
    elif config is not None:
        path = Path(config)
        if path.suffix == '.json':
            cfg, source = json.loads(path.read_text()), str(path)
        else:
            from mmengine.config import Config
            cfg, source = Config.fromfile(str(path)).to_dict(), None
    else:
        stamp = work_dir / 'chunks' / 'config.json'
        if not stamp.is_file():
            raise FileNotFoundError(f'{stamp} is missing: pass the fit\'s config '
                                    '(config=... / --config)')
        cfg, source = json.loads(stamp.read_text()), str(stamp)
    if source is not None:
        check_component_types(cfg, source)
    reg = dict(cfg.get('registrant') or {})
    if not reg:
        raise ValueError(f'the fit config of {work_dir} has no registrant')
    reg.setdefault('body_model', cfg.get('body_model'))
    return dict(data=dict(cfg.get('data') or {}), registrant=reg)


def resolve_dataset(run: FitRun, override: Optional[PathLike]) -> Optional[Path]:
    """The fitted dataset file: the override, or the recorded path tried as given, relative
    to the work dir, and by name inside the work dir."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f'dataset {path} does not exist')
        return path
    recorded = run.dataset or run.config['data'].get('path')
    if not recorded:
        return None
    recorded = Path(recorded)
    for candidate in (recorded, run.work_dir / recorded, run.work_dir / recorded.name):
        if candidate.is_file():
            return candidate
    return None


def build_registrant(run: FitRun, keypoint_names: Sequence[str]):
    """The fit's registrant (body model and keypoint matching), without hooks."""

    register_all_modules(init_default_scope=False)
    reg_cfg = dict(run.config['registrant'])
    reg_cfg['hooks'] = []
    registrant = REGISTRANTS.build(reg_cfg)
    registrant.setup(dict(keypoint_names=list(keypoint_names),
                          joint_lookup=joint_lookup_dict(run.config['data'].get('joint_lookup'))))
    return registrant


@torch.no_grad()
def model_outputs(body_model, params: Mapping[str, np.ndarray], rows: np.ndarray,
                   handler=None, chunk: int = 64
                   ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Vertices (S, V, 3), keypoints (S, Kp, 3) or None, joints (S, J, 3) of ``rows``,
    and the keypoint handler's points with their fitted offsets (S, N, 3) or None."""
    verts, kps, joints, points = [], [], [], []
    for start in range(0, len(rows), chunk):
        sel = rows[start:start + chunk]
        kwargs = {k: torch.as_tensor(params[k][sel], dtype=body_model.dtype)
                  for k in _MODEL_INPUTS if k in params}
        out = body_model(**kwargs, return_vertices=True)
        verts.append(out.vertices.double().numpy())
        joints.append(out.joints.double().numpy())
        if out.keypoints is not None:
            kps.append(out.keypoints.double().numpy())
        if handler is not None:
            offsets = {k: torch.as_tensor(v[sel], dtype=body_model.dtype)
                       for k, v in params.items() if k == handler.offsets_key}
            points.append(handler.points(out, offsets).double().numpy())
    return (np.concatenate(verts), np.concatenate(kps) if kps else None,
            np.concatenate(joints), np.concatenate(points) if points else None)



def frame_range_mask(frame_numbers: np.ndarray,
                     frames: Optional[Tuple[Optional[int], Optional[int]]]) -> np.ndarray:
    """(N,) bool: ``frames = (lo, hi)`` keeps ``lo <= frame < hi`` (None: no bound)."""
    keep = np.ones(len(frame_numbers), dtype=bool)
    if frames is not None:
        lo, hi = frames
        if lo is not None:
            keep &= frame_numbers >= lo
        if hi is not None:
            keep &= frame_numbers < hi
    return keep
