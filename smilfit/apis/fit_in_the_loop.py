"""Fit-in-the-loop: a network refined from its own fitted predictions (as SPIN does for
human bodies), on every frame of its training file, labelled or not.

A trained regressor predicts every frame of its training dataset; every frame is then
fitted to its 2D keypoints (proofread labels, or a SLEAP model's predictions on frames
nobody labelled) starting from the network's prediction where that is the best start
(``data.init_from``, :mod:`smilfit.apis.fitting.network_starts`); the fits become the
training labels (``fit_results``, :mod:`smilfit.datasets.fit_labels`: failed and poor
fits left out, a camera the fit names as far off silenced) and the network trains on
from its weights. Each round::

    round_<r>/predictions/predictions.h5   the network of round r-1 on every sample
    round_<r>/fit/fit_results.h5           every sample fitted from those starts
    round_<r>/train/                       training from round r-1's weights on the fits
    rounds.json                            what every round did and reached

Round 1 starts from the given checkpoint. The frames the training config holds out
(its validation split) are predicted and fitted too (their fits start nothing and teach
nothing: the training split never reads them) and score each round's network
(``val_metrics``).

Every step's output is kept: ``resume=True`` continues an interrupted run from the first
step without one (same configs). A run in a work dir that holds rounds needs ``resume``
or ``overwrite``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np

from smilfit.datasets.hdf5.files import read_h5
from smilfit.errors import SmilfitUserError
from smilfit.utils.atomic import write_text

PathLike = Union[str, 'os.PathLike[str]']

REPORT_NAME = 'rounds.json'


class FitInTheLoopError(SmilfitUserError, ValueError):
    """The configs cannot make a fit-in-the-loop run (no training file, a schedule the
    loop cannot scale)."""


def training_file(train_cfg) -> Path:
    """The HDF5 dataset the training config trains on (``data_root`` joined with
    ``ann_file`` of ``train_dataloader.dataset``)."""
    loader = train_cfg.get('train_dataloader') or {}
    dataset = loader.get('dataset') or {}
    if dataset.get('ann_file') is None:
        raise FitInTheLoopError('the training config has no train_dataloader.dataset.'
                                'ann_file: the loop fits the frames of that file')
    path = Path(dataset['ann_file'])
    if not path.is_absolute() and dataset.get('data_root'):
        path = Path(dataset['data_root']) / path
    if not path.is_file():
        raise FileNotFoundError(f'the training file {path} does not exist (prepare it '
                                'with tools/preprocess_sleap.py)')
    return path


def set_iterations(train_cfg, iters: int) -> None:
    """Train ``iters`` iterations per round: ``train_cfg.max_iters`` (and the validation
    and checkpoint intervals) set to it, every iteration-based scheduler's ``begin`` and
    ``end`` scaled by ``iters / max_iters`` (a warm-up stays the same share of the run).

    Raises:
        FitInTheLoopError: the config trains by epochs (no ``max_iters``) or a scheduler
            is epoch-based.
    """
    loop = train_cfg.get('train_cfg') or {}
    if int(iters) < 1:
        raise FitInTheLoopError(f'iterations per round must be >= 1, got {iters}')
    if loop.get('max_iters') is None:
        raise FitInTheLoopError('the training config trains by epochs (train_cfg has no '
                                'max_iters): set its schedule per round in the config, '
                                'without iterations')
    old = int(loop['max_iters'])
    schedulers = train_cfg.get('param_scheduler') or []
    if isinstance(schedulers, Mapping):
        schedulers = [schedulers]
    for scheduler in schedulers:
        if scheduler.get('by_epoch', True):
            raise FitInTheLoopError(f'param_scheduler {scheduler.get("type")} is '
                                    'epoch-based: the loop scales iteration-based ones only')
        for key in ('begin', 'end'):
            if scheduler.get(key) is not None:
                scheduler[key] = max(0, min(int(iters), round(scheduler[key] * iters / old)))
        if scheduler.get('end') is not None and \
                scheduler['end'] <= scheduler.get('begin', 0):  # (a step at least)
            scheduler['end'] = scheduler.get('begin', 0) + 1
    loop['max_iters'] = int(iters)
    if loop.get('val_interval') is not None:
        loop['val_interval'] = int(iters)
    checkpoint = (train_cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is not None:
        checkpoint['interval'] = int(iters)


def _predict(train_cfg, checkpoint: Path, data: Path, out_dir: Path, device: str,
             progress: bool) -> Path:
    """The network at ``checkpoint`` on every sample of ``data``: ``predictions.h5``."""
    from .inference import HDF5Frames, build_test_pipeline, load_regressor, run_inference
    model, cfg = load_regressor(checkpoint, copy.deepcopy(train_cfg), device)
    result = run_inference(model, build_test_pipeline(cfg), HDF5Frames(data), out_dir,
                           video=None, slp=False, overwrite=True, progress=progress,
                           body_model=cfg.model.get('body_model'))
    return Path(result['predictions'])


def _fit(fit_cfg, data: Path, predictions: Path, out_dir: Path, device: str,
         progress: bool) -> Path:
    """Every sample of ``data`` fitted from the best of its default start and the
    network's prediction: ``fit_results.h5``."""
    from .fitting import fit_dataset
    cfg = copy.deepcopy(fit_cfg)
    cfg.data.pop('sleap', None)       # the training file is prepared already
    cfg.data.update(path=str(data), init_from=str(predictions))
    return fit_dataset(cfg, out_dir, overwrite=True, progress=progress, device=device)


def _fit_summary(results: Path) -> Dict[str, Any]:
    """Samples, those started from the network and the LM iterations of a
    ``fit_results.h5``; failed samples and the overall median reprojection error (px)
    from the fit's quality report beside it (``fit_quality.json``)."""
    from .fitting import QUALITY_JSON
    with read_h5(results, 'fit results', written_whole=True) as f:
        history = json.loads(f.attrs['loss_history'])
        n = int(f['samples/index'].shape[0])
        starts = int(f['samples/network_start'][:].sum()) if 'samples/network_start' in f \
            else 0
    quality_path = results.parent / QUALITY_JSON
    quality = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
    median = (quality.get('overall') or {}).get('median_px')
    return dict(samples=n, network_starts=starts,
                failed=len(quality.get('failed_samples', [])),
                lm_iterations=int(sum(r.get('steps', 0) for r in history)),
                median_error_px=None if median is None else round(float(median), 4))


def _train(train_cfg, checkpoint: Path, results: Path, work_dir: Path) -> Path:
    """Train from ``checkpoint``'s weights with ``results`` as the labels; the newest
    checkpoint."""
    from mmengine.runner import Runner
    from smilfit.engine.compat import find_latest_checkpoint
    cfg = copy.deepcopy(train_cfg)
    cfg.train_dataloader.dataset.fit_results = str(results.resolve())
    cfg.load_from, cfg.resume = str(checkpoint), False
    cfg.work_dir = str(work_dir)
    Runner.from_cfg(cfg).train()
    latest = find_latest_checkpoint(str(work_dir))
    if latest is None:
        raise FitInTheLoopError(f'training in {work_dir} wrote no checkpoint (the config\'s '
                                'default_hooks.checkpoint must save at the end)')
    return Path(latest)


def _validate(train_cfg, checkpoint: Path, work_dir: Path) -> Dict[str, float]:
    """The training config's validation metrics of ``checkpoint`` (its held-out split);
    empty when the config has no validation loop."""
    if not train_cfg.get('val_dataloader') or not train_cfg.get('val_evaluator'):
        return {}
    from mmengine.runner import Runner
    cfg = copy.deepcopy(train_cfg)
    cfg.load_from, cfg.resume = str(checkpoint), False
    cfg.work_dir = str(work_dir)
    cfg.setdefault('val_cfg', dict(type='ValLoop'))
    metrics = Runner.from_cfg(cfg).val()
    return {k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float, np.floating))}


def _stamp(train_cfg, fit_cfg) -> str:
    """A digest of both configs, to tell a resumed run from another."""
    text = json.dumps([train_cfg.to_dict(), fit_cfg.to_dict()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_fit_in_the_loop(train_cfg, fit_cfg, checkpoint: PathLike, work_dir: PathLike, *,
                        rounds: int = 1, iters: Optional[int] = None, resume: bool = False,
                        overwrite: bool = False, progress: bool = True,
                        device: str = 'cpu',
                        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Refine a network from its own fits, ``rounds`` times (see the module docstring).

    Args:
        train_cfg: the network's training config (an mmengine ``Config``: model,
            ``train_dataloader`` on a prepared HDF5 file with images and 2D keypoints,
            schedule, hooks), as ``tools/train.py`` would run it.
        fit_cfg: a fitting config (``tools/fit.py``'s) for the same body model and
            keypoints; its ``data.path`` becomes the training file.
        checkpoint: the network that starts round 1.
        work_dir: output folder.
        rounds: rounds of predict, fit, train.
        iters: training iterations per round (:func:`set_iterations`); None: the
            config's schedule.
        resume: keep the steps an earlier run of this work dir finished.
        overwrite: start again in a work dir that holds rounds.
        progress: progress bars.
        device: torch device of inference, fitting and training.
        log: where a line per step goes.

    Returns:
        The report (also ``work_dir/rounds.json``): ``dict(checkpoint=..., data=...,
        start_metrics={...}, rounds=[dict(round, checkpoint_in, predictions, fit,
        samples, network_starts, failed, lm_iterations, median_error_px (the fits' median
        reprojection error in the file's stored pixels), train_seconds, seconds,
        checkpoint, val_metrics), ...])``.

    Raises:
        FitInTheLoopError, FileNotFoundError, FileExistsError: what the run cannot start
            with, before anything is written; a step's own errors (e.g. a fitting config
            the fit refuses) when that step runs (``resume`` then continues from it).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    if int(rounds) < 1:
        raise FitInTheLoopError(f'rounds must be >= 1, got {rounds}')
    train_cfg = copy.deepcopy(train_cfg)
    if iters is not None:
        set_iterations(train_cfg, iters)
    data = training_file(train_cfg).resolve()
    if fit_cfg.get('data') is None or fit_cfg.get('registrant') is None:
        raise FitInTheLoopError('the fitting config needs data and registrant (a '
                                'tools/fit.py config)')
    work_dir = Path(work_dir)
    report_path = work_dir / REPORT_NAME
    earlier = sorted(work_dir.glob('round_*')) if work_dir.is_dir() else []
    if earlier and not (resume or overwrite):
        raise FileExistsError(f'{work_dir} holds rounds of an earlier run; pass resume '
                              '(--resume) to continue it or overwrite (--overwrite)')
    if overwrite and not resume:
        for path in earlier:
            shutil.rmtree(path)
        report_path.unlink(missing_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = dict(checkpoint=str(checkpoint.resolve()), data=str(data),
                                  configs=_stamp(train_cfg, fit_cfg), rounds=[])
    if resume and earlier:
        old = json.loads(report_path.read_text()) if report_path.is_file() else {}
        differ = [k for k in ('checkpoint', 'data', 'configs') if old.get(k) != report[k]]
        if differ:
            def how(k: str) -> str:
                if k not in old:
                    return f'{k}: not recorded there (an older run)'
                return 'configs: the configs differ' if k == 'configs' else \
                    f'{k}: {old[k]} there, {report[k]} now'
            what = '; '.join(how(k) for k in differ)
            raise FileExistsError(f'{work_dir} holds rounds of a run with another '
                                  f'checkpoint, data or configs ({what}): --resume '
                                  'continues the same run only; pass --overwrite to start '
                                  'again')
        report = old
        report['rounds'] = [r for r in report.get('rounds', []) if r['round'] <= rounds]
    if 'start_metrics' not in report:
        report['start_metrics'] = _validate(train_cfg, checkpoint, work_dir / 'round_0')
        write_text(report_path, json.dumps(report, indent=1))
    current = checkpoint
    done = {r['round']: r for r in report['rounds']}
    for r in range(1, int(rounds) + 1):
        if r in done and Path(done[r]['checkpoint']).is_file():
            current = Path(done[r]['checkpoint'])
            continue
        step_dir = work_dir / f'round_{r}'
        start = time.perf_counter()
        predictions = step_dir / 'predictions' / 'predictions.h5'
        if not (resume and predictions.is_file()):
            log(f'round {r}: the network ({current.name}) on {data.name}')
            predictions = _predict(train_cfg, current, data, predictions.parent, device,
                                   progress)
        results = step_dir / 'fit' / 'fit_results.h5'
        if not (resume and results.is_file()):
            log(f'round {r}: fitting every sample from the network\'s starts')
            results = _fit(fit_cfg, data, predictions, results.parent, device, progress)
        fit = _fit_summary(results)
        log(f'round {r}: {fit["network_starts"]} of {fit["samples"]} samples started from '
            f'the network, {fit["lm_iterations"]} LM iterations; training on the fits')
        start_train = time.perf_counter()
        trained = _train(train_cfg, current, results, step_dir / 'train')
        seconds = time.perf_counter() - start_train
        metrics = _validate(train_cfg, trained, step_dir / 'val')
        row = dict(round=r, checkpoint_in=str(current), predictions=str(predictions),
                   fit=str(results), **fit, train_seconds=round(seconds, 1),
                   seconds=round(time.perf_counter() - start, 1), checkpoint=str(trained),
                   val_metrics=metrics)
        report['rounds'] = [x for x in report['rounds'] if x['round'] != r] + [row]
        write_text(report_path, json.dumps(report, indent=1))
        log(f'round {r}: {trained}')
        current = trained
    return report


__all__ = ['FitInTheLoopError', 'REPORT_NAME', 'run_fit_in_the_loop', 'set_iterations',
           'training_file']
