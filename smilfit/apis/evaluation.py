"""Benchmarking: score a trained regressor or a fitting config on the same data and metrics.

The engine behind ``tools/test.py``:

- :func:`evaluate_regressor` runs mmengine's ``Runner.test()`` on a checkpoint (the
  config's ``test_dataloader`` and ``test_evaluator``; distributed with a launcher, the
  metrics gather every rank's per-sample records), then writes a report directory with
  :func:`smilfit.evaluation.write_report`.
- :func:`evaluate_fitting` fits the samples of the same split with the config's
  registrant (``smilfit.registrants``, as ``tools/fit.py`` does), turns the fitted
  keypoints and the samples' cameras into the prediction dicts the regressors return
  (:func:`fit_to_predictions`) and scores them with the same metrics and report.

Both return ``dict(metrics=..., report_dir=..., info=...)``; ``info`` (also written as
``run_info.json`` in the report) says what was evaluated: task (``'regression'`` or
``'fitting'``), view mode (``'single_view'`` / ``'multi_view'``, from the model's
``num_views`` or the dataset type), split, sample count, checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from smilfit.registry.build import build_module
from ..errors import SmilfitUserError
from ..utils.atomic import write_text
from smilfit.apis.fitting import (_OBSERVATION_KEYS, FittingConfigError, fitted_points,
                                  load_joint_lookup, observations_from_batch, prepare_data,
                                  prepare_data_once)
from smilfit.cameras import project_points
from smilfit.datasets import DatasetReader
from smilfit.engine.checkpoint_io import load_checkpoint_file
from smilfit.engine.config_data import ConfigDataError, config_from_data
from smilfit.evaluation import collect_raw, write_report
from smilfit.registry import DATASETS, METRICS, REGISTRANTS

PathLike = Union[str, os.PathLike]

#: Metrics used when a config has no ``test_evaluator`` (or only non-smilfit metrics).
DEFAULT_EVALUATOR = [dict(type='KeypointPCKMetric'),
                     dict(type='MPJPEMetric', nonfinite_pred='ignore'),
                     dict(type='ReprojectionErrorMetric')]
RUN_INFO = 'run_info.json'

__all__ = ['evaluate_regressor', 'evaluate_fitting', 'fit_to_predictions',
           'load_checkpoint_config', 'detect_task', 'split_sample_indices', 'build_metrics',
           'EvaluationConfigError', 'DEFAULT_EVALUATOR']


class EvaluationConfigError(SmilfitUserError, ValueError):
    """The config or checkpoint cannot be evaluated; the message says why."""


# ---------------------------------------------------------------------------- configs
def load_checkpoint_config(checkpoint: PathLike):
    """The training config stored in a checkpoint by ``CheckpointMetaHook``
    (``meta['smilfit']['config_data']``), rebuilt as a ``Config`` from data: nothing stored
    in the checkpoint is executed (:mod:`smilfit.engine.config_data`).

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointError: the file is not a loadable checkpoint.
        EvaluationConfigError: the checkpoint carries no config as data (only Python text,
            which smilfit never executes, or none at all), or an invalid one.
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint_file(path)
    meta = ckpt.get('meta') or {}
    ours = meta.get('smilfit') if isinstance(meta, Mapping) else None
    data = ours.get('config_data') if isinstance(ours, Mapping) else None
    if data is None:
        has_text = isinstance(ours, Mapping) and ours.get('config') or (
            isinstance(meta, Mapping) and meta.get('cfg'))
        why = ('carries its config only as Python text, which smilfit does not execute '
               '(running it could run any code)') if has_text else 'carries no config'
        raise EvaluationConfigError(f'{path} {why}; pass the config file too: '
                                    'CONFIG CHECKPOINT')
    try:
        return config_from_data(data, source=str(path))
    except ConfigDataError as err:
        raise EvaluationConfigError(str(err)) from None


def detect_task(cfg: Mapping[str, Any]) -> str:
    """``'regression'`` for a config with a ``model`` (a trained network),
    ``'fitting'`` for one with a ``registrant`` (optimisation).

    Raises:
        EvaluationConfigError: it has neither.
    """
    if cfg.get('model') is not None:
        return 'regression'
    if cfg.get('registrant') is not None:
        return 'fitting'
    raise EvaluationConfigError('the config has neither a model (regression) nor a '
                                'registrant (fitting)')


def build_metrics(evaluator_cfg: Any) -> list:
    """smilfit metrics from a ``test_evaluator`` entry (dict, list of dicts or
    ``dict(type='Evaluator', metrics=[...])``); :data:`DEFAULT_EVALUATOR` when None."""
    spec = DEFAULT_EVALUATOR if evaluator_cfg is None else evaluator_cfg
    if isinstance(spec, Mapping) and 'metrics' in spec:
        spec = spec['metrics']
    if isinstance(spec, Mapping):
        spec = [spec]
    return [build_module(METRICS, m, 'metric') for m in spec]


def _has_smilfit_metrics(evaluator_cfg: Any) -> bool:
    try:
        metrics = build_metrics(evaluator_cfg)
    except Exception:  # noqa: BLE001 - unknown types: let the runner report them
        return True
    return any(hasattr(m, 'last_raw') for m in metrics)


def split_sample_indices(cfg: Mapping[str, Any], split: Optional[str]) -> np.ndarray:
    """File rows (``index`` of the HDF5 dataset) of the samples to evaluate.

    With a ``test_dataloader`` in the config its dataset (type, file, split settings)
    decides, so fitting sees exactly the samples the regressor's test loop sees;
    ``split`` overrides its split (``'all'``: every session). Without one, every sample
    of ``data.path`` (``split`` must then be None or ``'all'``).
    """
    loader = cfg.get('test_dataloader')
    if loader is None or loader.get('dataset') is None:
        if split not in (None, 'all'):
            raise EvaluationConfigError(f'split {split!r}: the config has no '
                                        'test_dataloader saying how sessions are split')
        with DatasetReader(cfg['data']['path']) as reader:
            return np.arange(len(reader))
    ds_cfg = dict(loader['dataset'])
    if split is not None:
        ds_cfg['split'] = None if split == 'all' else split
    ds_cfg.update(pipeline=[], load_images=False, load_masks=False, test_mode=True)
    dataset = DATASETS.build(ds_cfg)
    rows = [int(dataset.get_data_info(i)['index']) for i in range(len(dataset))]
    return np.unique(np.asarray(rows, dtype=np.int64))


def split_frames_info(dataset) -> Dict[str, Any]:
    """What a report says about the frames it scored: ``split_by`` and, for a split by
    time blocks, ``frames`` (``{session: [[first, last], ...]}``, the evaluated split's
    blocks); nothing for a dataset without that metadata."""
    meta = getattr(dataset, 'metainfo', None) or {}
    out: Dict[str, Any] = {}
    if 'split_by' in meta:
        out['split_by'] = meta['split_by']
    split = getattr(dataset, 'split', None)
    if meta.get('split_frames') is not None and split is not None:
        out['frames'] = meta['split_frames'][split]
    return out


# ---------------------------------------------------------------------------- reports
def _write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=1, default=str))


def _report(out_dir: Path, metrics: Mapping[str, float], evaluator, info: Dict[str, Any],
            overwrite: bool, plots: bool) -> Path:
    raw = collect_raw(evaluator)
    title = (f"smilfit test: {info['task']} ({info['mode']}), {info.get('config_name', '')}"
             f", split {info.get('split')}")
    write_report(out_dir, metrics, raw, title=title, overwrite=overwrite, plots=plots)
    _write_json_atomic(out_dir / RUN_INFO, info)
    return out_dir


# ---------------------------------------------------------------------------- regression
def evaluate_regressor(cfg, checkpoint: Optional[PathLike], out_dir: PathLike, *,
                       work_dir: Optional[PathLike] = None, split: Optional[str] = None,
                       launcher: str = 'none', overwrite: bool = False,
                       plots: bool = True) -> Dict[str, Any]:
    """Test a trained regressor with mmengine's Runner and write a report.

    Args:
        cfg: the training config (``mmengine.Config``) with ``model``,
            ``test_dataloader`` (default: ``val_dataloader``) and ``test_evaluator``
            (default: ``val_evaluator``, else :data:`DEFAULT_EVALUATOR`; a config whose
            evaluator has no smilfit metric gets the defaults added, so the report has
            raw arrays and plots).
        checkpoint: weights to load (``load_from``); None keeps the config's.
        out_dir: the report directory.
        work_dir: the Runner's work dir (logs); default ``out_dir``'s parent.
        split: override the test dataset's split (``'train'``, ``'val'``, ``'test'``,
            ``'all'``).
        launcher: ``'none'`` or a distributed launcher (``'pytorch'`` under torchrun,
            ``'slurm'``, ``'mpi'``); the report is written by rank 0.

    Returns:
        ``dict(metrics, report_dir, info)`` (``report_dir`` None on other ranks).
    """
    from mmengine.dist import get_rank
    # Imported here: mmengine's runner side and smilfit.engine.hooks load
    # torch.distributed.fsdp (about 1 s), which fitting and testing fits must not pay.
    from mmengine.runner import Runner

    from smilfit.engine.data_check import check_runner_data
    from smilfit.engine.hooks.model_access import unwrap_model

    cfg = cfg.copy()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f'{out_dir} exists; pass overwrite=True (--overwrite)')
    if cfg.get('test_dataloader') is None:
        if cfg.get('val_dataloader') is None:
            raise EvaluationConfigError('the config has no test_dataloader (nor '
                                        'val_dataloader) to evaluate on')
        cfg.test_dataloader = cfg.val_dataloader
    evaluator = cfg.get('test_evaluator', cfg.get('val_evaluator'))
    if evaluator is None:
        evaluator = DEFAULT_EVALUATOR
    elif not _has_smilfit_metrics(evaluator):
        evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple)) else
                     [evaluator]) + DEFAULT_EVALUATOR
    cfg.test_evaluator = evaluator
    cfg.setdefault('test_cfg', dict(type='TestLoop'))
    if not cfg.get('test_cfg'):
        cfg.test_cfg = dict(type='TestLoop')
    if split is not None:
        cfg.test_dataloader.dataset.split = None if split == 'all' else split
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
        cfg.load_from = str(checkpoint)
    cfg.resume = False
    cfg.launcher = launcher
    cfg.work_dir = str(work_dir if work_dir is not None else out_dir.parent)
    cfg.setdefault('default_scope', 'smilfit')
    # Training-only parts are not needed to test (and would build an optimizer).
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg.pop(key, None)
    prepare_data_once(cfg)
    runner = Runner.from_cfg(cfg)
    check_runner_data(runner, ('test',))   # before any hook reads the data
    metrics = runner.test()
    model = unwrap_model(runner.model)
    num_views = int(getattr(model, 'num_views', 1))
    dataset = runner.test_dataloader.dataset
    info = dict(task='regression', mode='multi_view' if num_views > 1 else 'single_view',
                num_views=num_views, model_type=type(model).__name__,
                checkpoint=None if checkpoint is None else str(checkpoint),
                split=dataset.split if hasattr(dataset, 'split') else split,
                num_samples=len(dataset), config_name=Path(cfg.filename or 'config').stem,
                world_size=runner.world_size, **split_frames_info(dataset))
    report_dir = None
    if get_rank() == 0:
        report_dir = _report(out_dir, metrics, runner.test_loop.evaluator, info, overwrite,
                             plots)
    return dict(metrics=dict(metrics), report_dir=report_dir, info=info)


# ---------------------------------------------------------------------------- fitting
def fit_to_predictions(keypoints: torch.Tensor, model_index: torch.Tensor,
                       data_index: torch.Tensor, num_data_keypoints: int,
                       batch: Mapping[str, Any], camera_names: Sequence[Sequence[str]],
                       keypoint_names: Sequence[str],
                       session_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Fitted model points + the samples' cameras -> the regressors' prediction dicts.

    Args:
        keypoints: (B, Kp, 3) fitted model points (world), matched to the data by
            ``model_index`` / ``data_index`` (M,).
        num_data_keypoints: N, the dataset's keypoint count.
        batch: a :class:`~smilfit.datasets.DatasetReader` batch with ``keypoints_2d``
            (B, C, N, 2), ``visible``, ``confidence``, ``valid`` (B, C), cameras ``K``,
            ``R``, ``t``, ``dist``, ``image_size``, ``session``, ``frame``, ``index``,
            optional ``keypoints_3d`` (B, N, 3).
        camera_names: per sample its C view names.
        keypoint_names: the N data keypoint names.
        session_names: names by session index.

    Returns:
        One dict per sample: ``pred_keypoints_2d`` (C, N, 2) (the fitted points projected
        through the sample's cameras; NaN for unmatched data keypoints),
        ``pred_keypoints_3d`` (N, 3), ``gt_keypoints_2d``, ``visible``, ``confidence``,
        ``view_valid``, ``image_size``, ``camera_names``, optional ``gt_keypoints_3d``,
        and ``session``, ``frame``, ``sample_idx`` (the file row).
    """
    B = keypoints.shape[0]
    dtype = torch.float64
    kp3d = keypoints.new_full((B, num_data_keypoints, 3), float('nan'), dtype=dtype)
    kp3d[:, data_index] = keypoints.to(dtype).index_select(1, model_index)
    cam = {k: torch.as_tensor(np.asarray(batch[k]), dtype=dtype) for k in ('K', 'R', 't')}
    dist = torch.as_tensor(np.asarray(batch['dist']), dtype=dtype) if 'dist' in batch \
        else None
    kp2d = project_points(torch.nan_to_num(kp3d)[:, None], cam['K'], cam['R'], cam['t'],
                          dist)
    kp2d = torch.where(torch.isfinite(kp3d)[:, None, :, :2], kp2d,
                       torch.full_like(kp2d, float('nan'))).numpy()
    kp3d = kp3d.numpy()
    out = []
    for i in range(B):
        sample = dict(pred_keypoints_2d=kp2d[i], pred_keypoints_3d=kp3d[i],
                      gt_keypoints_2d=np.asarray(batch['keypoints_2d'][i], np.float64),
                      visible=np.asarray(batch['visible'][i], bool),
                      confidence=np.asarray(batch['confidence'][i], np.float32),
                      view_valid=np.asarray(batch['valid'][i], bool),
                      image_size=np.asarray(batch['image_size'][i]),
                      camera_names=list(camera_names[i]),
                      keypoint_names=list(keypoint_names),
                      session=session_names[int(batch['session'][i])],
                      frame=int(batch['frame'][i]), sample_idx=int(batch['index'][i]))
        if 'keypoints_3d' in batch:
            sample['gt_keypoints_3d'] = np.asarray(batch['keypoints_3d'][i], np.float64)
        out.append(sample)
    return out


def _rank_share(n: int, rank: int, world: int) -> np.ndarray:
    """Positions this rank evaluates: ``rank, rank + world, ...`` padded by wrapping to
    equal lengths, as mmengine's ``DefaultSampler`` does (its gather interleaves ranks and
    cuts the padding off with ``evaluate(size)``)."""
    per_rank = -(-n // world)
    order = np.arange(per_rank * world) % max(n, 1)
    return order[rank::world]


def evaluate_fitting(cfg, out_dir: PathLike, *, split: Optional[str] = None,
                     launcher: str = 'none', device: str = 'cpu', progress: bool = True,
                     max_samples: Optional[int] = None, overwrite: bool = False,
                     plots: bool = True) -> Dict[str, Any]:
    """Fit the config's evaluation samples and score them like a regressor.

    Args:
        cfg: a fitting config (``body_model``, ``registrant``, ``data = dict(path=...,
            batch_size=..., joint_lookup=...)``), optionally with ``test_dataloader``
            (which samples: see :func:`split_sample_indices`) and ``test_evaluator``
            (default :data:`DEFAULT_EVALUATOR`).
        out_dir: the report directory.
        split: override the split (``'all'``: every sample).
        launcher: ``'none'`` or a distributed launcher: samples are shared round-robin
            between ranks and the metrics gather the results on rank 0.
        device: torch device for fitting.
        max_samples: evaluate only the first samples of the split (quick checks).

    Returns:
        ``dict(metrics, report_dir, info)`` (``report_dir`` None on other ranks).
    """
    from mmengine.dist import get_dist_info, init_dist
    from mmengine.evaluator import Evaluator
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f'{out_dir} exists; pass overwrite=True (--overwrite)')
    if launcher != 'none':
        import torch.distributed as tdist
        if not tdist.is_initialized():
            init_dist(launcher, backend='gloo' if device == 'cpu' else 'nccl')
    rank, world = get_dist_info()
    data_cfg = dict(cfg.get('data') or {})
    if 'path' not in data_cfg:
        raise FittingConfigError("the config needs data = dict(path='dataset.h5', ...)")
    if rank == 0:
        prepare_data(cfg, progress=progress)
    if world > 1:
        from mmengine.dist import barrier
        barrier()
    rows = split_sample_indices(cfg, split)
    if max_samples is not None:
        rows = rows[:int(max_samples)]
    if len(rows) == 0:
        raise EvaluationConfigError(f'no samples to evaluate in split {split!r} of '
                                    f'{data_cfg["path"]}')
    reg_cfg = dict(cfg.get('registrant') or {})
    reg_cfg.setdefault('body_model', cfg.get('body_model'))
    if not progress or rank != 0:
        reg_cfg['hooks'] = [h for h in reg_cfg.get('hooks', ())
                            if not (isinstance(h, Mapping) and h.get('type') == 'ProgressBarHook')]
    registrant = REGISTRANTS.build(reg_cfg)
    registrant.body_model.to(device)
    reader = DatasetReader(data_cfg['path'])
    names = list(reader.keypoint_names)
    registrant.setup(dict(keypoint_names=names,
                          joint_lookup=load_joint_lookup(data_cfg.get('joint_lookup'))))
    handler = registrant.keypoint_handler()
    if handler is None:
        raise EvaluationConfigError('the registrant has no 2D keypoint handler, so fitted '
                                    'keypoints cannot be matched to the data')
    metrics = build_metrics(cfg.get('test_evaluator'))
    evaluator = Evaluator(metrics)
    evaluator.dataset_meta = dict(keypoint_names=names, units=reader.units,
                                  num_views=reader.num_views)
    mine = rows[_rank_share(len(rows), rank, world)]
    batch_size = int(data_cfg.get('batch_size', 64))
    keys = list(_OBSERVATION_KEYS) + ['session', 'frame', 'image_size']
    for start in tqdm(range(0, len(mine), batch_size), desc='fit + score',
                      disable=not progress or rank != 0):
        idx = mine[start:start + batch_size]
        batch = reader.read(idx, keys=keys)       # rows in any order, repeats allowed
        batch['index'] = idx
        observations = registrant.to_tensors(observations_from_batch(batch))
        result = registrant.fit(observations)
        points = fitted_points(result, handler)
        cams = [reader.camera_names[int(s)] if int(s) < len(reader.camera_names) else []
                for s in batch['session']]
        C = np.asarray(batch['keypoints_2d']).shape[1]
        cams = [list(c)[:C] + [''] * (C - len(c)) for c in cams]
        preds = fit_to_predictions(points.detach().cpu(), handler.model_index.cpu(),
                                   handler.data_index.cpu(), len(names), batch, cams, names,
                                   list(reader.session_names))
        evaluator.process(data_samples=preds)
    results = evaluator.evaluate(len(rows))
    single = reader.num_views == 1
    info = dict(task='fitting', mode='single_view' if single else 'multi_view',
                num_views=int(reader.num_views), registrant=reg_cfg.get('type'),
                dataset=str(data_cfg['path']), split=split if split is not None else (
                    (cfg.get('test_dataloader') or {}).get('dataset', {}).get('split')),
                num_samples=int(len(rows)), config_name=Path(cfg.filename or 'config').stem
                if hasattr(cfg, 'filename') else 'config', world_size=world,
                stages=[s.name for s in registrant.stages])
    reader.close()
    report_dir = None
    if rank == 0:
        report_dir = _report(out_dir, results, evaluator, info, overwrite, plots)
    return dict(metrics=dict(results), report_dir=report_dir, info=info)
