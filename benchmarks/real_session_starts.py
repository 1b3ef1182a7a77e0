"""The real-session benchmark's fits from a network's start: each frame fitted again from
the default start and from the network's, timed, capped at every last-stage iteration
and from starts closer to the answer (``benchmarks/real_session_regression.py``)."""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_session_data import (FIT_CONFIG, LOOKUP, MODEL, fit_points,  # noqa: E402
                               network_predictions, score)
from tables import emit, write  # noqa: E402  (benchmarks/tables.py)

class PerFrameFit(NamedTuple):
    """One :func:`per_frame_fit`: its results, seconds end to end (reading the data and
    writing the results too) and fitting alone (:func:`fitting_clock`), LM iterations (the
    batches', each its slowest frame's), LM iterations per frame (each frame's own, the
    mean) and the frames started from the network."""
    path: Path
    seconds: float
    fit_seconds: float
    steps: int
    per_frame: float
    won: int


@contextlib.contextmanager
def fitting_clock():
    """Inside it, the seconds spent fitting: every batch's ``SMILRegistrant.fit`` and,
    from a network's predictions, choosing each frame's start (the comparison of the two
    starts is part of fitting from a network). Yields a one-item list that adds them up.
    The rest of a dataset fit (reading the data, writing the results) is the same for
    every start, so a share of fitting alone says what the start changes."""
    from smilfit.apis.fitting import dataset_fit
    from smilfit.registrants.registrant import SMILRegistrant
    spent = [0.0]

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper
    with mock.patch.object(SMILRegistrant, 'fit', timed(SMILRegistrant.fit)), \
            mock.patch.object(dataset_fit, '_network_starts',
                              timed(dataset_fit._network_starts)):
        yield spent


def per_frame_fit(work: Path, keypoints: Path, results: Path, init=None,
                  last_stage_iters=None, exclude_views=None, device: str = 'cpu'
                  ) -> PerFrameFit:
    """The per-frame fit of every frame with the animal's skeleton of ``results`` held
    fixed, from the default start or from predictions ``init``, the config's last stage
    capped at ``last_stage_iters`` iterations where given, without the cameras
    ``exclude_views`` where given, on ``device``."""
    import json

    import h5py
    from mmengine.config import Config

    from smilfit.apis.fitting import fit_dataset
    cfg = Config.fromfile(str(FIT_CONFIG))
    cfg.body_model.model_path = str(MODEL)
    cfg.data.pop('sleap')
    cfg.data.update(path=str(keypoints), joint_lookup=str(LOOKUP),
                    skeleton=dict(path=str(results), animal=0, mode='fixed'))
    if init is not None:
        cfg.data.init_from = str(init)
    if exclude_views:
        cfg.data.exclude_views = list(exclude_views)
    if last_stage_iters is not None:
        cfg.registrant.stages[-1]['n_iter'] = int(last_stage_iters)
    with fitting_clock() as fitting:
        start = time.perf_counter()
        path = fit_dataset(cfg, work, progress=False, overwrite=True, device=device)
        seconds = time.perf_counter() - start
    with h5py.File(path, 'r') as f:
        history = json.loads(f.attrs['loss_history'])
        frames = len(f['samples/index'])
        won = int(f['samples/network_start'][:].sum()) if 'samples/network_start' in f \
            else 0
    steps = sum(r['steps'] for r in history)
    per_frame = sum(r.get('unit_steps', 0) for r in history) / frames
    return PerFrameFit(path, seconds, fitting[0], steps, per_frame, won)


def fits_from_network(out: Path, crops: Path, keypoints: Path, results: Path,
                      checkpoint: Path, held, repeats: int = 7, device: str = 'cpu') -> list:
    """The per-frame fit of every frame from the default start and from the network's
    predictions (``data.init_from``; those frames skip the config's coarse stages), the
    animal's skeleton taken from the first fit (held fixed, so only the per-frame pass
    is timed): rows of (start, LM iterations, LM iterations per frame, median seconds end
    to end and fitting alone over ``repeats`` alternating runs, held-out frames' median
    and p90 px, frames started from the network), the fits on ``device``."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = (('default start', None), ('network start', predictions))
    fitted, seconds = alternating_fits(
        {label: (out / f'fit_{label.split()[0]}', init) for label, init in starts},
        keypoints, results, repeats, device=device)
    rows = []
    for label, _ in starts:
        fit = fitted[label]
        points, _, _ = fit_points(fit.path, keypoints)
        rows.append((label, fit.steps, fit.per_frame, seconds[label],
                     score(points, keypoints, held)['scored'], fit.won))
    return rows


#: Camera subsets the fits from the network are measured on besides all four (nothing was
#: tuned on them): the cameras each leaves out.
LEFT_OUT = (('side',), ('back',), ('back', 'side'), ('mid', 'side'))


def fits_from_network_by_cameras(out: Path, crops: Path, keypoints: Path, results: Path,
                                 checkpoint: Path, held, left_out=LEFT_OUT,
                                 repeats: int = 5) -> list:
    """:func:`fits_from_network` with cameras left out of the fit (``left_out``): rows of
    (cameras left out, the network start's shares of the default start's batch LM
    iterations, LM iterations per frame and seconds fitting alone (medians of
    ``repeats`` alternating runs), frames started from the network, the held-out median
    and p90 px from the default start and from the network's). Scored in the same
    cameras as every table (the ones left out included)."""
    predictions = network_predictions(out, crops, checkpoint)
    rows = []
    for views in left_out:
        starts = {'default': (out / 'fit_cameras_default', None),
                  'network': (out / 'fit_cameras_network', predictions)}
        fitted, seconds = alternating_fits(starts, keypoints, results, repeats, views)
        d, n = fitted['default'], fitted['network']
        scores = [score(fit_points(f.path, keypoints)[0], keypoints, held)['scored']
                  for f in (d, n)]
        rows.append((views, n.steps / d.steps, n.per_frame / d.per_frame,
                     seconds['network'][1] / seconds['default'][1], n.won, *scores))
    return rows


def alternating_fits(starts: dict, keypoints: Path, results: Path, repeats: int,
                     exclude_views=None, device: str = 'cpu'):
    """:func:`per_frame_fit` of every ``{label: (work dir, init[, last stage cap])}`` of
    ``starts`` (without the cameras ``exclude_views``, on ``device``), in turn ``repeats``
    times (alternating, so that all see the same machine load):
    ``({label: the last run's PerFrameFit}, {label: (median seconds end to end, median
    seconds fitting alone)})``."""
    seconds = {label: [] for label in starts}
    fitted = {}
    for _ in range(repeats):
        for label, (work, init, *cap) in starts.items():
            fitted[label] = per_frame_fit(work, keypoints, results, init, *cap,
                                          exclude_views=exclude_views, device=device)
            seconds[label].append((fitted[label].seconds, fitted[label].fit_seconds))
    return fitted, {label: tuple(float(m) for m in np.median(s, axis=0))
                    for label, s in seconds.items()}


def last_stage_iterations() -> int:
    """The most LM iterations the fit config's last stage runs (its ``n_iter``)."""
    from mmengine.config import Config
    return int(Config.fromfile(str(FIT_CONFIG)).registrant.stages[-1]['n_iter'])


def fits_along_the_way(out: Path, crops: Path, keypoints: Path, results: Path,
                       checkpoint: Path, held, caps=None, device: str = 'cpu') -> list:
    """Where on its way each start reaches its held-out error: the fits of
    :func:`fits_from_network` with the config's last stage capped at each of ``caps``
    iterations (one run each; the uncapped fit is :func:`fits_from_network`'s): rows of
    (start, cap, LM iterations, seconds, held-out median and p90 px).

    By default every cap from 1 up, so that the first cap reaching an error is the
    iteration that reaches it, until a cap adds no iteration (the stage had stopped on
    its own: every larger cap is the same fit) or the stage's own ``n_iter``."""
    predictions = network_predictions(out, crops, checkpoint)
    every = caps is None
    caps = range(1, last_stage_iterations() + 1) if every else caps
    rows = []
    for label, init in (('default start', None), ('network start', predictions)):
        before = None
        for cap in caps:
            fit = per_frame_fit(out / 'fit_capped', keypoints, results, init, cap,
                                device=device)
            if every and fit.steps == before:
                break
            before = fit.steps
            points, _, _ = fit_points(fit.path, keypoints)
            rows.append((label, cap, fit.steps, fit.seconds,
                         score(points, keypoints, held)['scored']))
    return rows


#: "The same held-out error" (median, p90 px): to the precision the tables give them.
SAME_ERROR_PX = (0.01, 0.1)


def reaches(error, target, tolerance=SAME_ERROR_PX) -> bool:
    """Whether the held-out ``error`` (median, p90 px) is the ``target``'s or better to
    within ``tolerance``: both figures at most the target's plus the tolerance."""
    return all(e <= t + tol for e, t, tol in zip(error, target, tolerance))


def first_cap_reaching(along: list, label: str, target, tolerance=SAME_ERROR_PX):
    """The smallest last-stage cap at which start ``label``'s fit of
    :func:`fits_along_the_way`'s rows ``along`` :func:`reaches` the held-out error
    ``target`` (median, p90 px). ``None`` where no cap does (the uncapped fit, as
    shipped, is then the one to time)."""
    reached = [cap for start, cap, _, _, error in along
               if start == label and reaches(error, target, tolerance)]
    return min(reached) if reached else None


def time_to_error(out: Path, crops: Path, keypoints: Path, results: Path, checkpoint: Path,
                  held, along: list, target, repeats: int = 7, device: str = 'cpu') -> list:
    """How soon each start reaches the default start's held-out error ``target`` (its
    uncapped fit's median and p90 px): each start's fit with the config's last stage
    capped at :func:`first_cap_reaching` (uncapped where no cap reaches it), timed over
    ``repeats`` alternating runs on ``device``. A capped fit is the shipped one stopped
    early, so its seconds are when the shipped fit had reached that error (an upper
    bound where ``along``'s caps skip iterations: the cap is the first of those that
    reaches it). Rows of (start, cap, LM iterations, per frame, (median seconds end to
    end, fitting alone), held-out median and p90 px)."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = {label: (out / f'fit_reach_{label.split()[0]}', init,
                      first_cap_reaching(along, label, target))
              for label, init in (('default start', None), ('network start', predictions))}
    fitted, seconds = alternating_fits(starts, keypoints, results, repeats, device=device)
    rows = []
    for label, (_, _, cap) in starts.items():
        fit = fitted[label]
        points, _, _ = fit_points(fit.path, keypoints)
        rows.append((label, cap, fit.steps, fit.per_frame, seconds[label],
                     score(points, keypoints, held)['scored']))
    return rows


def print_fits_along_the_way(rows: list, tables=None, command=None, name: str = '') -> None:
    """The table of :func:`fits_along_the_way`'s ``rows``; with ``tables``, written there
    too (``real_session_capped<name>.md``)."""
    print('\nThe same fits with their last stage capped (one run each; every cap until the '
          'stage stops on its own): where each start reaches its held-out error')
    print(f'{"start":<16}{"last stage cap":>15}{"LM iterations":>15}{"seconds":>9}'
          f'{"median px":>11}{"p90 px":>8}')
    for label, cap, steps, seconds, (median, p90) in rows:
        print(f'{label:<16}{cap:>15}{steps:>15}{seconds:>9.2f}{median:>11.2f}{p90:>8.2f}')
    write(f'real_session_capped{name}',
          ['start', 'last stage cap', 'LM iterations', 'seconds', 'median px', 'p90 px'],
          [[label, cap, steps, f'{seconds:.2f}', f'{median:.2f}', f'{p90:.2f}']
           for label, cap, steps, seconds, (median, p90) in rows], tables, command)


def print_time_to_error(rows: list, target, repeats: int, tables=None, command=None,
                        name: str = '') -> None:
    """The table of :func:`time_to_error`'s ``rows`` and the network start's shares; with
    ``tables``, written there too (``real_session_time_to_error<name>.md``)."""
    print(f'\nHow soon each start reaches the default start\'s held-out error (its uncapped '
          f'fit\'s {target[0]:.2f} / {target[1]:.2f} px, to {SAME_ERROR_PX[0]} / '
          f'{SAME_ERROR_PX[1]} px): the fit stopped at the first last-stage cap that reaches '
          f'it ("none": the uncapped fit), medians of {repeats} alternating runs')
    print(f'{"start":<16}{"last stage cap":>15}{"LM iterations":>15}{"per frame":>11}'
          f'{"seconds":>9}{"fitting s":>11}{"median px":>11}{"p90 px":>8}')
    for label, cap, steps, per_frame, (seconds, fitting), (median, p90) in rows:
        print(f'{label:<16}{"none" if cap is None else cap:>15}{steps:>15}{per_frame:>11.1f}'
              f'{seconds:>9.2f}{fitting:>11.2f}{median:>11.2f}{p90:>8.2f}')
    batch, per_frame, seconds, fitting = (share for _, share in network_shares(rows))
    print(f'{"network/default":<16}{"":>15}{batch:>15.0%}{per_frame:>11.0%}{seconds:>9.0%}'
          f'{fitting:>11.0%}')
    write(f'real_session_time_to_error{name}',
          ['start', 'last stage cap', 'LM iterations', 'per frame', 'seconds', 'fitting s',
           'median px', 'p90 px'],
          [[label, 'none' if cap is None else cap, steps, f'{pf:.1f}', f'{sec:.2f}',
            f'{fit:.2f}', f'{med:.2f}', f'{p90:.2f}']
           for label, cap, steps, pf, (sec, fit), (med, p90) in rows] +
          [['network / default', '', f'{batch:.0%}', f'{per_frame:.0%}', f'{seconds:.0%}',
            f'{fitting:.0%}', '', '']], tables, command)
    for label, _, _, _, _, error in rows:
        if not reaches(error, target):
            print(f'{label} never reaches it: not with any cap, nor its whole fit (the '
                  f'shares above are of its whole fit)')
    print(half_the_work(rows, target))


def network_shares(rows: list) -> tuple:
    """The network start's shares of the default start's work in :func:`time_to_error`'s
    ``rows``: ((what, share), ...) for the batch's LM iterations, per frame, seconds end
    to end and fitting alone."""
    (_, _, steps, per_frame, seconds, _), (_, _, n_steps, n_per_frame, n_seconds, _) = rows
    return (('LM iterations of the batch', n_steps / steps),
            ('per frame', n_per_frame / per_frame),
            ('time end to end', n_seconds[0] / seconds[0]),
            ('fitting alone', n_seconds[1] / seconds[1]))


def half_the_work(rows: list, target) -> str:
    """Whether the network start of :func:`time_to_error`'s ``rows`` reaches the default
    start's held-out error ``target`` in at most half its LM iterations (the batch's and
    per frame) and time (end to end and fitting alone)."""
    if not reaches(rows[1][-1], target):
        return 'At most half the default start\'s work to its error: NO (never reaches it)'
    return 'At most half the default start\'s work to its error: ' + ', '.join(
        f'{what} {_yes(share <= 0.5)} ({share:.0%})' for what, share in network_shares(rows))


def print_how_soon(out: Path, crops: Path, keypoints: Path, results: Path, checkpoint: Path,
                   held, target, repeats: int, device: str = 'cpu', tables=None,
                   command=None, recipe: str = '') -> None:
    """The fits from the two starts capped along the way (:func:`fits_along_the_way`),
    then how soon each reaches the default start's held-out error ``target``
    (:func:`time_to_error`, ``repeats`` alternating runs), on ``device``, both printed
    (and with ``tables`` written there, named by ``recipe`` and the device)."""
    along = fits_along_the_way(out, crops, keypoints, results, checkpoint, held,
                               device=device)
    name = f'_{recipe}{device.split(":")[0]}'
    print_fits_along_the_way(along, tables, command, name)
    rows = time_to_error(out, crops, keypoints, results, checkpoint, held, along, target,
                         repeats, device)
    print_time_to_error(rows, target, repeats, tables, command, name)
    return rows


def print_seed_shares(by_seed: list, tables=None, command=None, name: str = '') -> None:
    """The network start's shares of the default start's work with each training seed's
    network: ``by_seed`` is (seed, :func:`fits_from_network`'s rows, :func:`time_to_error`'s
    rows) per seed. Whole fits (the batch's LM iterations, per frame, fitting alone, end
    to end), then to the default start's error ("never" where the network start does not
    reach it), and the network start's held-out error; with ``tables``, written there too
    (``real_session_starts_seeds<name>.md``)."""
    table = []
    for seed, whole, reach in by_seed:
        (_, steps, per_frame, seconds, target, _), (_, n_steps, n_per_frame, n_seconds,
                                                     error, _) = whole
        shares = [n_steps / steps, n_per_frame / per_frame, n_seconds[1] / seconds[1],
                  n_seconds[0] / seconds[0]]
        to_error = ['never', '', '']
        if reaches(reach[1][-1], target):
            shares_to = dict(network_shares(reach))
            to_error = [f'{shares_to[what]:.0%}'
                        for what in ('per frame', 'fitting alone', 'time end to end')]
        table.append([seed] + [f'{share:.0%}' for share in shares] + to_error +
                     [f'{error[0]:.3f} / {error[1]:.2f}'])
    print('\nThe network start\'s shares of the default start\'s work, by training seed')
    emit(f'real_session_starts_seeds{name}',
         ['seed', 'whole: batch LM iterations', 'per frame', 'fitting alone', 'end to end',
          'to the error: per frame', 'fitting alone', 'end to end',
          "network start's held-out median / p90 px"], table, tables, command)


def frame_rows(wanted, held, what: str) -> list:
    """The row of ``held`` (frame numbers) holding each of ``wanted``'s frames; a
    ValueError naming ``what`` where a frame is missing there or either side repeats one
    (one animal of one session is what the benchmark fits)."""
    wanted, held = [int(f) for f in wanted], [int(f) for f in held]
    if len(set(wanted)) != len(wanted) or len(set(held)) != len(held):
        raise ValueError(f'{what}: a frame appears twice (more than one animal or session)')
    where = {f: r for r, f in enumerate(held)}
    missing = sorted(set(wanted) - set(where))
    if missing:
        raise ValueError(f'{what}: frames {missing[:5]} are missing')
    return [where[f] for f in wanted]


def closer_starts(predictions: Path, results: Path, fraction: float, out: Path) -> Path:
    """``out``: a copy of ``predictions`` (``tools/infer.py``'s) whose per-frame start
    parameters and 3D keypoints lie ``fraction`` of the way from the fit's answer
    (``results``, its rows matched by frame; one session) to the network's: 1 is the
    network's own start, 0 the fit's converged one. What a better network would give,
    along the way this one errs."""
    import shutil

    import h5py

    from smilfit.apis.fitting.network_starts import START_PARAMS, predicted_keypoint_names
    with h5py.File(results, 'r') as f:
        frames = f['samples/frame'][:]
        fitted = {k: f[f'params/{k}'][:].astype(np.float64) for k in START_PARAMS}
        fitted_points = f['fitted_keypoints_3d'][:].astype(np.float64)
        data_names = [n.decode() if isinstance(n, bytes) else str(n)
                      for n in f['data_keypoint_names'][:]]
    with h5py.File(predictions, 'r') as f:
        rows = frame_rows(f['frame'][:], frames, f'{predictions} against the fit {results}')
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(predictions, out)
    with h5py.File(out, 'r+') as f:
        for name in (n for n in START_PARAMS if f'params/{n}' in f):
            net = f[f'params/{name}'][:].astype(np.float64)
            fit = fitted[name][rows]
            f[f'params/{name}'][...] = fit + fraction * (net - fit)
        names = predicted_keypoint_names(f, out)
        if names is not None:
            net = f['keypoints_3d'][:].astype(np.float64)
            fit = np.full_like(net, np.nan)
            for j, name in enumerate(names):
                if name in data_names:
                    fit[:, j] = fitted_points[rows, data_names.index(name)]
            f['keypoints_3d'][...] = np.where(np.isfinite(fit), fit + fraction * (net - fit),
                                              net)
    return out


@contextlib.contextmanager
def start_recorder():
    """Inside it, every fit records where its samples start. Yields a list that gets one
    (B, K, 3) array per run of a registrant's stages: the data's K keypoints (world units;
    NaN where no model point matches) posed by the parameters the stages start from (the
    start a fit chose, with the animal's skeleton and keypoint offsets), as its keypoint
    handler places them. A dataset fit's skeleton estimate runs stages too: record a
    per-frame pass with the skeleton held fixed (:func:`per_frame_fit`), one process, and
    the arrays are its batches in the order of its results."""
    import torch

    from smilfit.body_models.parameters import MODEL_INPUTS
    from smilfit.registrants.registrant import SMILRegistrant
    batches = []
    original = SMILRegistrant._run_stages

    @functools.wraps(original)
    def run_stages(self, stages, params, obs, groups, *args, **kwargs):
        handler = self.keypoint_handler()
        expanded = self._expand(params, self.shared, groups)
        with torch.no_grad():
            posed = self.body_model(**{k: v for k, v in expanded.items() if k in MODEL_INPUTS},
                                    return_vertices=False)
            matched = handler.matched_points(posed, expanded)
        points = torch.full(obs['keypoints_2d'].shape[:1] + obs['keypoints_2d'].shape[2:3]
                            + (3,), float('nan'), dtype=matched.dtype)
        points[:, handler.data_index.cpu()] = matched.cpu()
        batches.append(points.numpy())
        return original(self, stages, params, obs, groups, *args, **kwargs)
    with mock.patch.object(SMILRegistrant, '_run_stages', run_stages):
        yield batches


def fit_start_points(work: Path, keypoints: Path, results: Path, init) -> dict:
    """{(session, frame): (K, 3)} where :func:`per_frame_fit` from ``init`` starts each
    frame (:func:`start_recorder`)."""
    with start_recorder() as batches:
        fit = per_frame_fit(work, keypoints, results, init)
    _, keys, _ = fit_points(fit.path, keypoints)
    points = np.concatenate(batches)
    return {k: points[i] for i, k in enumerate(keys)}


def fits_from_closer_starts(out: Path, crops: Path, keypoints: Path, results: Path,
                            checkpoint: Path, held,
                            fractions=(3.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0),
                            repeats: int = 5) -> list:
    """The fits of :func:`fits_from_network` from starts closer to the answer than the
    network's, and farther (:func:`closer_starts`, ``fractions`` of its distance from the
    fit's: above 1, a worse network along the way this one errs),
    each timed against the default start (medians of ``repeats`` alternating runs): rows
    of (fraction, the start's held-out median and p90 px, LM iterations per frame and
    its share of the default start's, the batches' LM iterations (each its slowest
    frame's) and their share, the share of its seconds end to end and fitting alone, the
    fit's held-out median and p90 px). Says whether a better network would halve the
    fit's time."""
    predictions = network_predictions(out, crops, checkpoint)
    starts = [('default', None)] + [
        (f, closer_starts(predictions, results, f, out / 'closer' / f'predictions_{f}.h5'))
        for f in fractions]
    fitted, seconds = alternating_fits(
        {label: (out / 'closer' / f'fit_{label}', init) for label, init in starts},
        keypoints, results, repeats)
    default = fitted['default']
    rows = []
    for label, init in starts[1:]:
        fit = fitted[label]
        start = score(fit_start_points(out / 'closer' / 'start', keypoints, results, init),
                      keypoints, held)
        end = score(fit_points(fit.path, keypoints)[0], keypoints, held)
        rows.append((label, start['scored'], fit.per_frame,
                     fit.per_frame / default.per_frame, fit.steps,
                     fit.steps / default.steps, seconds[label][0] / seconds['default'][0],
                     seconds[label][1] / seconds['default'][1], end['scored']))
    return rows

def _yes(met: bool) -> str:
    return 'yes' if met else 'NO'
