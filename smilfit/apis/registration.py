"""Register a folder of 3D scans with a body model from a config: the engine behind
``tools/register.py``.

Per batch of scans: load (trimesh, resampled to a fixed point count), normalise (centre,
scale, optional PCA alignment or a manual rotation: :func:`smilfit.registration.normalize_scans`),
initialise the global pose from the PCA frames of scan and template
(:func:`initial_global_pose`), fit in the registrant's stages (e.g. rigid -> pose and
shape -> per-vertex offsets) and score the result against the scan
(:func:`surface_errors`). Each finished batch is written to ``<work_dir>/chunks/``
atomically, so an interrupted run resumes (``resume=True``); under a distributed launcher
every rank takes every ``world``-th batch and rank 0 merges the chunks at the end.

Outputs in ``work_dir`` (every file written to a temporary name and renamed):

- ``registrations.npz``: ``names`` (N,), ``vertices`` (N, V, 3) and the fitted
  parameters under the :class:`~smilfit.body_models.SMILModel` names, both in the *model
  frame* (the normalised scan frame the fit ran in), so ``tools/build_model.py`` can
  unpose the meshes with the parameters; ``scan_vertices`` (N, V, 3) the registered
  meshes in each scan's own frame; the normalisation (``norm_rotation`` (N, 3, 3),
  ``norm_center`` (N, 3), ``norm_scale`` (N,): ``x_model = s R (x_scan - c)``); the
  per-scan errors and losses.
- ``meshes/<scan name>.<ext>``: the registered meshes in the scan frame.
- ``errors.csv``: per scan, the scan-to-mesh surface distance (mean, percentile, max)
  and mesh-to-scan distance (mean, percentile), in the scan's units.
- ``summary.json``: the averages, and the per-vertex error against the true meshes
  when the scan folder holds a synthetic ``ground_truth.npz``.

Shapes: B scans in a batch, P points per scan, V vertices, F faces, N scans in all.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from smilfit.registry.build import build_module
from smilfit.registry import BODY_MODELS, REGISTRANTS

from ..utils.atomic import atomic_dir, save_npz, write_text
from .distributed import barrier, setup_distributed
from .fitting.config import registrant_config
from smilfit.body_models.rotations import matrix_to_axis_angle
from smilfit.ops import as_padded_points, nearest_neighbor_sq, point_to_surface_sq
from smilfit.registration import (Scan, batch_scans, generate_synthetic_scans, load_scans,
                                  normalize_scans, principal_axes, sample_surface_points, save_scan)

PathLike = Union[str, os.PathLike]
Tensor = torch.Tensor

RESULTS_NAME = 'registrations.npz'
ERRORS_NAME = 'errors.csv'
SUMMARY_NAME = 'summary.json'
MESH_DIR = 'meshes'
GROUND_TRUTH_NAME = 'ground_truth.npz'
#: Scan files :func:`list_scan_files` picks up by default.
DEFAULT_SCAN_EXTENSIONS = ('.obj', '.ply', '.stl', '.off')
#: Keys of ``cfg.registration`` (anything else is a typo and an error).
REGISTRATION_KEYS = ('normalize', 'init', 'init_points', 'init_rolls', 'error_percentile',
                     'error_candidates', 'save_meshes', 'mesh_format', 'seed')
#: Keys of ``cfg.data``.
DATA_KEYS = ('scan_dir', 'scans', 'extensions', 'num_points', 'sample', 'seed', 'batch_size',
             'max_scans', 'synthetic')

class RegistrationConfigError(ValueError):
    """The registration config is missing something or has an unknown key."""


# ------------------------------------------------------------------- config
def _check_keys(section: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise RegistrationConfigError(f'{where} has unknown key(s) {unknown}; allowed: '
                                      f'{list(allowed)}')


def registration_options(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg.registration`` with its defaults filled in, validated."""
    opts = dict(cfg.get('registration') or {})
    _check_keys(opts, REGISTRATION_KEYS, 'registration')
    out = dict(normalize=dict(center='mean', scale='none', align=False), init='pca',
               init_points=1024, init_rolls=8, error_percentile=95.0, error_candidates='bound',
               save_meshes=True, mesh_format='.ply', seed=0)
    out.update(opts)
    if out['init'] not in ('pca', 'none'):
        raise RegistrationConfigError(f"registration.init must be 'pca' or 'none', got "
                                      f"{out['init']!r}")
    if not 0.0 < float(out['error_percentile']) <= 100.0:
        raise RegistrationConfigError('registration.error_percentile must be in (0, 100], '
                                      f"got {out['error_percentile']}")
    if out['mesh_format'] not in ('.ply', '.obj', '.stl', '.off'):
        raise RegistrationConfigError("registration.mesh_format must be '.ply', '.obj', "
                                      f"'.stl' or '.off', got {out['mesh_format']!r}")
    return out


def list_scan_files(data_cfg: Mapping[str, Any]) -> List[Path]:
    """The scan files of ``data_cfg``: ``scans`` (a list of files) or every file in
    ``scan_dir`` (not recursive) with one of ``extensions``, sorted by name."""
    if data_cfg.get('scans'):
        files = [Path(p) for p in data_cfg['scans']]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f'scan files not found: {missing[:5]}')
    else:
        if not data_cfg.get('scan_dir'):
            raise RegistrationConfigError("the config needs data = dict(scan_dir='folder', "
                                          "...) or data = dict(scans=[...])")
        folder = Path(data_cfg['scan_dir'])
        if not folder.is_dir():
            raise FileNotFoundError(f'scan folder not found: {folder}')
        exts = tuple(e.lower() for e in data_cfg.get('extensions', DEFAULT_SCAN_EXTENSIONS))
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise FileNotFoundError(f'no scans with extensions {list(exts)} in {folder}')
    if data_cfg.get('max_scans') is not None:
        files = files[:int(data_cfg['max_scans'])]
    stems = [p.stem for p in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise RegistrationConfigError(f'scan names must be unique (they name the outputs); '
                                      f'repeated: {repeated[:5]}')
    return files


# ------------------------------------------------------------ synthetic scans
def write_synthetic_scans(model, out_dir: PathLike, num_scans: int, num_points: int = 2000,
                          progress: bool = False, **options) -> Path:
    """Point clouds of random posed bodies of ``model`` as ``.ply`` files, with the truth.

    Writes ``scan_0000.ply``, ... and ``ground_truth.npz`` (``names``, ``vertices``
    (N, V, 3) the true meshes, ``faces``, the true ``global_orient``, ``body_pose``,
    ``betas``, ``transl``) into a temporary folder renamed to ``out_dir`` at the end, so
    an interrupted run leaves no half-made scan folder.

    Args:
        model: a :class:`~smilfit.body_models.SMILModel`.
        out_dir: the scan folder to create (must not exist).
        num_scans, num_points: N scans of P points.
        progress: tqdm progress bar.
        **options: the rest of :func:`smilfit.registration.generate_synthetic_scans`
            (``noise_std``, ``pose_std``, ``global_orient_std``, ``betas_std``,
            ``transl_std``, ``dropout``, ``seed``).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f'{out_dir} exists; remove it to generate new scans')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scans = generate_synthetic_scans(model, num_scans, num_points, **options)
    with atomic_dir(out_dir) as tmp_dir:
        tmp = Path(tmp_dir)
        names = [f'scan_{i:04d}' for i in range(num_scans)]
        points = scans.points.detach().cpu().double().numpy()
        mask = scans.mask.cpu().numpy()
        for i in tqdm(range(num_scans), desc='writing synthetic scans', disable=not progress):
            save_scan(Scan(points=points[i][mask[i]]), tmp / f'{names[i]}.ply')
        truth = {k: v.detach().cpu().numpy() for k, v in scans.params.items()}
        with open(tmp / GROUND_TRUTH_NAME, 'wb') as f:
            np.savez(f, names=np.array(names), vertices=scans.vertices.detach().cpu().numpy(),
                     faces=model.faces.cpu().numpy(), **truth)
    return out_dir


def prepare_scans(cfg: Mapping[str, Any], progress: bool = True) -> None:
    """Generate the config's synthetic scans when it asks for them and they are missing.

    ``data.synthetic = dict(num_scans=..., num_points=..., noise_std=..., ...)`` (see
    :func:`write_synthetic_scans`) fills ``data.scan_dir`` from the config's body model
    on first use, so a demo or a CI run needs no scan files.
    """
    data_cfg = cfg.get('data') or {}
    synthetic = data_cfg.get('synthetic')
    if synthetic is None or not data_cfg.get('scan_dir') or Path(data_cfg['scan_dir']).exists():
        return
    body_model = cfg.get('body_model')
    if body_model is None:
        raise RegistrationConfigError('data.synthetic needs a body_model to draw scans from')
    model = build_module(BODY_MODELS, body_model, 'body model')
    write_synthetic_scans(model, data_cfg['scan_dir'], progress=progress, **dict(synthetic))


# ------------------------------------------------------------ initialisation
def _weighted_frame(points: Tensor, weights: Tensor) -> Tuple[Tensor, Tensor]:
    """Centre (B, 3) and principal axes (B, 3, 3) (rows) of weighted points."""
    w = weights.to(points.dtype)
    center = (points * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    centred = (points - center[:, None]) * w[..., None]
    return center, principal_axes(centred, w)


@torch.no_grad()
def template_surface_points(model, num_points: int = 1024, seed: int = 0) -> Tensor:
    """(1, P, 3) area-uniform points on the model's rest-pose mesh (mean shape)."""
    rest = model(return_vertices=True).vertices
    g = torch.Generator().manual_seed(seed)
    return sample_surface_points(rest, model.faces, num_points, g)['points']


def frame_candidates(num_rolls: int = 8, dtype=torch.float64) -> Tensor:
    """(2 * num_rolls, 3, 3) rotations of a PCA frame worth trying.

    Principal axes are defined up to sign, and the 2nd and 3rd are unstable when their
    variances are close (a body about as wide as it is high): both directions of the
    first (long) axis, each with ``num_rolls`` rolls about it (multiples of
    360 / num_rolls degrees). Even ``num_rolls`` include the four proper sign flips.
    """
    if num_rolls < 1:
        raise ValueError(f'num_rolls must be >= 1, got {num_rolls}')
    theta = torch.arange(num_rolls, dtype=dtype) * (2 * math.pi / num_rolls)
    c, s = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    roll = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], -1).view(-1, 3, 3)
    flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=dtype))  # 180 deg about axis 2
    return torch.cat([roll, roll @ flip])


@torch.no_grad()
def initial_global_pose(model, points: Tensor, mask: Optional[Tensor] = None,
                        num_points: int = 1024, seed: int = 0,
                        num_rolls: int = 8) -> Dict[str, Tensor]:
    """Root rotation and translation that put the template's PCA frame on each scan's.

    The candidates of :func:`frame_candidates` (both directions of the long axis, rolls
    about it) are tried and the one with the smallest two-sided chamfer distance (on
    ``num_points`` points of the template surface and of each scan) wins; the fitting
    stages refine it. The global rotation of the model pivots about its root joint,
    which the translation accounts for.

    Args:
        model: a :class:`~smilfit.body_models.SMILModel`.
        points: (B, P, 3) scan points in the frame the fit runs in (padded).
        mask: (B, P) valid points (default: the finite ones).
        num_points: points used to score the candidates.
        seed: seed of the template's surface samples and the scan subsample.
        num_rolls: rolls about the long axis tried per direction.

    Returns:
        ``dict(global_orient (B, 3) axis-angle, transl (B, 3))`` in the model's dtype.
    """
    points, valid = as_padded_points(points.to(model.dtype), mask, 'initial_global_pose')
    B = points.shape[0]
    template = template_surface_points(model, num_points, seed).to(points.device)
    c_t, axes_t = _weighted_frame(template, torch.ones(template.shape[:2], dtype=torch.bool,
                                                       device=points.device))
    c_s, axes_s = _weighted_frame(points, valid)
    # A fixed random subsample of each scan's valid points scores the candidates.
    g = torch.Generator().manual_seed(seed)
    keys = torch.rand(valid.shape, generator=g).to(points.device).masked_fill(~valid, 2.0)
    take = keys.argsort(1)[:, :min(num_points, points.shape[1])]
    sub = torch.gather(points, 1, take[..., None].expand(-1, -1, 3))
    sub_valid = torch.gather(valid, 1, take)
    cands = frame_candidates(num_rolls, points.dtype).to(points.device)  # (n, 3, 3)
    # x_scan - c_s = R (x_template - c_t),  R = A_s^T C A_t  (rows of A are the axes).
    rot = axes_s.transpose(1, 2)[:, None] @ (cands[None] @ axes_t[:, None])
    n = cands.shape[0]
    moved = (template - c_t[:, None])[:, None] @ rot.transpose(2, 3) + c_s[:, None, None]
    moved = moved.reshape(B * n, -1, 3)
    sub_n = sub.repeat_interleave(n, 0)
    sub_valid_n = sub_valid.repeat_interleave(n, 0)
    d_s2t, _ = nearest_neighbor_sq(sub_n, moved)
    d_t2s, _ = nearest_neighbor_sq(moved, sub_n, sub_valid_n)
    s2t = (d_s2t * sub_valid_n).sum(1) / sub_valid_n.sum(1).clamp_min(1)
    score = (s2t + d_t2s.mean(1)).view(B, n)
    best = rot[torch.arange(B, device=points.device), score.argmin(1)]  # (B, 3, 3)
    root = model(return_vertices=False).joints_kin[0, model.levels.root].to(points)
    # R (x - root) + root + transl = R (x - c_t) + c_s
    transl = c_s - root + (best @ (root - c_t[0])[:, None])[..., 0]
    return dict(global_orient=matrix_to_axis_angle(best), transl=transl)


# ------------------------------------------------------------------ errors
@torch.no_grad()
def surface_errors(vertices: Tensor, faces: Tensor, points: Tensor,
                   mask: Optional[Tensor] = None, percentile: float = 95.0,
                   candidates: str = 'bound') -> Dict[str, Tensor]:
    """Distances between registered meshes and their scans, per scan.

    ``scan_to_mesh``: every valid scan point to the closest point on the mesh surface
    (triangles); ``mesh_to_scan``: every mesh vertex to its nearest scan point.

    Args:
        vertices: (B, V, 3) registered meshes; faces: (F, 3).
        points: (B, P, 3) scans (padded, NaN = missing); mask: (B, P) valid points.
        percentile: the reported percentile (95: the 95th-percentile distance).
        candidates: ``'bound'`` or ``'all'``, see :class:`~smilfit.losses.PointToSurfaceLoss`.

    Returns:
        (B,) tensors ``scan_to_mesh_mean``, ``scan_to_mesh_p<percentile>``,
        ``scan_to_mesh_max``, ``mesh_to_scan_mean``, ``mesh_to_scan_p<percentile>``,
        ``num_points``; distances in the units of the inputs.
    """
    points, valid = as_padded_points(points.to(vertices.dtype), mask, 'surface_errors')
    if points.shape[0] != vertices.shape[0]:
        raise ValueError(f'surface_errors: {points.shape[0]} scans for {vertices.shape[0]} '
                         'meshes')
    empty = ~valid.any(1)
    if bool(empty.any()):
        raise ValueError(f'surface_errors: scan(s) {torch.nonzero(empty).flatten().tolist()} '
                         'have no valid points')
    q = float(percentile) / 100.0
    tag = f'{float(percentile):g}'.replace('.', '_')
    d2, _ = point_to_surface_sq(points, vertices, faces.to(vertices.device), candidates)
    d = d2.clamp_min(0).sqrt().masked_fill(~valid, float('nan'))
    d_m2s = nearest_neighbor_sq(vertices, points, valid)[0].clamp_min(0).sqrt()
    return {'scan_to_mesh_mean': torch.nanmean(d, 1),
            f'scan_to_mesh_p{tag}': torch.nanquantile(d, q, dim=1),
            'scan_to_mesh_max': d.nan_to_num(-1.0).amax(1),
            'mesh_to_scan_mean': d_m2s.mean(1),
            f'mesh_to_scan_p{tag}': torch.quantile(d_m2s, q, dim=1),
            'num_points': valid.sum(1)}


# ------------------------------------------------------------- one batch
def normalization_kwargs(options: Mapping[str, Any], model) -> Dict[str, Any]:
    """``registration.normalize`` -> :func:`~smilfit.registration.normalize_scans` kwargs.

    ``target_size='template'`` scales each scan to the RMS radius of the template's
    surface (so a scan in other units lands at the model's size).
    """
    kwargs = dict(options)
    allowed = ('center', 'scale', 'target_size', 'align', 'rotation', 'axes')
    _check_keys(kwargs, allowed, 'registration.normalize')
    if kwargs.get('target_size') == 'template':
        pts = template_surface_points(model, 2048)[0]
        kwargs['target_size'] = float(((pts - pts.mean(0)) ** 2).sum(-1).mean().sqrt())
    return kwargs


def register_batch(registrant, points: Tensor, mask: Tensor, normals: Optional[Tensor],
                   options: Mapping[str, Any]) -> Dict[str, Any]:
    """Normalise, initialise and fit one batch of scans; score the registrations.

    Args:
        registrant: a set-up :class:`~smilfit.registrants.SMILRegistrant` whose
            handlers read ``scan_points`` / ``scan_mask`` / ``scan_normals``.
        points: (B, P, 3) scan points in the scans' frame (padded); mask: (B, P);
            normals: (B, P, 3) or ``None``.
        options: :func:`registration_options`.

    Returns:
        dict with ``result`` (the :class:`~smilfit.registrants.FitResult`, model frame),
        ``transform`` (the :class:`~smilfit.registration.SimilarityTransform`),
        ``scan_vertices`` (B, V, 3) in the scans' frame and ``errors`` (see
        :func:`surface_errors`, scan units).
    """
    model = registrant.body_model
    norm_points, tf = normalize_scans(points, mask, **normalization_kwargs(
        options['normalize'], model))
    observations = dict(scan_points=norm_points, scan_mask=mask)
    if normals is not None:
        observations['scan_normals'] = tf.apply_normals(normals)
    init = None
    if options['init'] == 'pca':
        init = initial_global_pose(model, norm_points, mask, int(options['init_points']),
                                   int(options['seed']), int(options['init_rolls']))
    result = registrant.fit(observations, init_params=init)
    vertices = result.output.vertices
    if vertices is None:
        raise RegistrationConfigError('the registrant returned no vertices: set '
                                      'registrant.return_vertices=True')
    scan_vertices = tf.inverse(vertices)
    errors = surface_errors(scan_vertices, model.faces, points, mask,
                            float(options['error_percentile']), options['error_candidates'])
    return dict(result=result, transform=tf, scan_vertices=scan_vertices, errors=errors)


# --------------------------------------------------------------- the run
def _fitted_params(registrant) -> List[str]:
    """Parameters some stage fits, plus the global pose (always set by the init)."""
    names = ['global_orient', 'transl']
    for stage in registrant.stages:
        names += [n for n in stage.fit if n not in names]
    return names


def _chunk_arrays(batch: Mapping[str, Any], registrant, indices: np.ndarray
                  ) -> Dict[str, np.ndarray]:
    f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    result, tf = batch['result'], batch['transform']
    out = {'index': indices.astype(np.int64), 'vertices': f32(result.output.vertices),
           'scan_vertices': f32(batch['scan_vertices']), 'joints': f32(result.output.joints),
           'norm_rotation': f32(tf.rotation), 'norm_center': f32(tf.center),
           'norm_scale': f32(tf.scale), 'total_loss': f32(result.total_loss),
           'diverged': result.diverged.cpu().numpy()}
    for name in _fitted_params(registrant):
        out[f'param_{name}'] = f32(result.params[name])
    for name, value in result.losses.items():
        out[f'loss_{name}'] = f32(value)
    for name, value in batch['errors'].items():
        out[f'error_{name}'] = value.cpu().numpy() if name == 'num_points' else f32(value)
    return out


def register_scans(cfg: Mapping[str, Any], work_dir: PathLike, *, resume: bool = False,
                   overwrite: bool = False, progress: bool = True, device: str = 'cpu',
                   launcher: str = 'none') -> Path:
    """Register every scan of ``cfg.data`` and write the results to ``work_dir``.

    Args:
        cfg: a config with ``body_model``, ``registrant`` (surface handlers, stages;
            its ``body_model`` defaults to the top-level one; ``return_vertices`` is
            forced on), ``data = dict(scan_dir=... | scans=[...], extensions=...,
            num_points=None, sample='surface', seed=0, batch_size=8, max_scans=None,
            synthetic=None)`` and optional ``registration = dict(normalize=dict(
            center='mean', scale='none', align=False), init='pca', init_points=1024,
            init_rolls=8, error_percentile=95, error_candidates='bound', save_meshes=True,
            mesh_format='.ply', seed=0)``.
        work_dir: output directory (see the module docstring for its files).
        resume: reuse finished batches in ``work_dir/chunks`` (same config and scans).
        overwrite: replace existing results.
        progress: tqdm progress bars (rank 0 only).
        device: torch device for fitting (``'cuda'`` becomes ``cuda:<local rank>``
            under a launcher).
        launcher: ``'none'`` (one process) or ``'pytorch'`` / ``'slurm'`` / ``'mpi'``:
            batches are shared round-robin between the ranks, each writes its own
            chunks and rank 0 merges them.

    Returns:
        The path of ``registrations.npz``.
    """
    from tqdm import tqdm

    data_cfg = dict(cfg.get('data') or {})
    _check_keys(data_cfg, DATA_KEYS, 'data')
    options = registration_options(cfg)
    rank, world, device = setup_distributed(launcher, device)
    reg_cfg = registrant_config(cfg, progress and rank == 0, error=RegistrationConfigError)
    reg_cfg['return_vertices'] = True
    work_dir = Path(work_dir)
    results = work_dir / RESULTS_NAME
    chunks = work_dir / 'chunks'
    if (results.exists() or (chunks.exists() and any(chunks.glob('batch_*.npz')))) and not (
            resume or overwrite):
        raise FileExistsError(f'{work_dir} already holds registration results; pass '
                              'resume=True (--resume) to continue or overwrite=True '
                              '(--overwrite)')
    if rank == 0:
        prepare_scans(cfg, progress=progress)
    barrier(world)
    files = list_scan_files(data_cfg)
    stamp = json.dumps(dict(data=data_cfg, registrant=reg_cfg, registration=options,
                            files=[str(f) for f in files]), sort_keys=True, default=str)
    stamp_path = chunks / 'config.json'
    if rank == 0:
        if overwrite and chunks.exists():
            for old in chunks.glob('batch_*.npz'):
                old.unlink()
        chunks.mkdir(parents=True, exist_ok=True)
        if resume and stamp_path.exists() and stamp_path.read_text() != stamp:
            raise FileExistsError(f'{chunks} was written with a different config or scans; '
                                  'use --overwrite to start again')
        write_text(stamp_path, stamp)
        if options['save_meshes']:
            (work_dir / MESH_DIR).mkdir(exist_ok=True)
    barrier(world)

    registrant = REGISTRANTS.build(reg_cfg)
    registrant.body_model.to(device)
    registrant.setup(dict(keypoint_names=[]))
    model = registrant.body_model
    batch_size = int(data_cfg.get('batch_size', 8))
    if batch_size < 1:
        raise RegistrationConfigError(f'data.batch_size must be >= 1, got {batch_size}')
    starts = list(range(0, len(files), batch_size))
    mine = [i for i in range(len(starts)) if i % world == rank]
    faces_np = model.faces.cpu().numpy()
    for b in tqdm(mine, desc='registering batches', disable=not progress or rank != 0):
        chunk_path = chunks / f'batch_{b:05d}.npz'
        if resume and chunk_path.exists():
            continue
        start = starts[b]
        batch_files = files[start:start + batch_size]
        scans = load_scans(batch_files, data_cfg.get('num_points'),
                           data_cfg.get('sample', 'surface'), int(data_cfg.get('seed', 0)) + start)
        points, mask, normals = batch_scans(scans, dtype=model.dtype, device=model.device)
        batch = register_batch(registrant, points, mask, normals, options)
        arrays = _chunk_arrays(batch, registrant, np.arange(start, start + len(batch_files)))
        if options['save_meshes']:
            for f, verts in zip(batch_files, arrays['scan_vertices']):
                save_scan(Scan(points=verts.astype(np.float64), faces=faces_np),
                          work_dir / MESH_DIR / f'{f.stem}{options["mesh_format"]}')
        save_npz(chunk_path, arrays)
    barrier(world)
    if rank == 0:
        merge_chunks(work_dir, files, len(starts), options, data_cfg)
    barrier(world)
    return results


def _ground_truth_errors(data_cfg: Mapping[str, Any], files: Sequence[Path],
                         scan_vertices: np.ndarray) -> Optional[Dict[str, Any]]:
    """Per-vertex error of the registrations against a synthetic folder's true meshes."""
    if not data_cfg.get('scan_dir'):
        return None
    path = Path(data_cfg['scan_dir']) / GROUND_TRUTH_NAME
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        names, truth = [str(n) for n in z['names']], z['vertices']
    row = {n: i for i, n in enumerate(names)}
    if any(f.stem not in row for f in files) or truth.shape[1:] != scan_vertices.shape[1:]:
        return None
    true = truth[[row[f.stem] for f in files]]
    err = np.linalg.norm(scan_vertices.astype(np.float64) - true, axis=-1)  # (N, V)
    return dict(per_vertex_mean=float(err.mean()), per_vertex_median=float(np.median(err)),
                per_vertex_p95=float(np.percentile(err, 95)), per_vertex_max=float(err.max()),
                per_scan_mean=[float(e) for e in err.mean(1)])


def merge_chunks(work_dir: PathLike, files: Sequence[Path], num_chunks: int,
                 options: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> Path:
    """Merge ``work_dir/chunks/batch_*.npz`` into ``registrations.npz``, ``errors.csv``
    and ``summary.json`` (each written atomically)."""
    work_dir = Path(work_dir)
    chunks = work_dir / 'chunks'
    parts = []
    for i in range(num_chunks):
        path = chunks / f'batch_{i:05d}.npz'
        if not path.is_file():
            raise FileNotFoundError(f'{path} is missing: a rank did not finish its batches')
        with np.load(path, allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(merged['index'])
    merged = {k: v[order] for k, v in merged.items()}
    if not np.array_equal(merged['index'], np.arange(len(files))):
        raise RuntimeError(f'chunks in {chunks} do not cover the {len(files)} scans exactly')
    names = [f.stem for f in files]
    arrays = {'names': np.array(names), 'files': np.array([str(f) for f in files])}
    for key, value in merged.items():
        group, _, name = key.partition('_')
        if group == 'param' and name:
            arrays[name] = value  # SMILModel names, as tools/build_model.py reads them
        else:
            arrays[key] = value
    results = work_dir / RESULTS_NAME
    save_npz(results, arrays)

    error_keys = [k for k in merged if k.startswith('error_')]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['name'] + [k[len('error_'):] for k in error_keys] +
                    ['total_loss', 'diverged'])
    for i, name in enumerate(names):
        writer.writerow([name] + [int(merged[k][i]) if k == 'error_num_points'
                                  else f'{float(merged[k][i]):.6g}' for k in error_keys] +
                        [f'{float(merged["total_loss"][i]):.6g}', int(merged['diverged'][i])])
    write_text(work_dir / ERRORS_NAME, buf.getvalue())

    summary = dict(num_scans=len(names), num_diverged=int(merged['diverged'].sum()),
                   error_percentile=float(options['error_percentile']),
                   errors={k[len('error_'):]: dict(mean=float(merged[k].mean()),
                                                    median=float(np.median(merged[k])),
                                                    max=float(merged[k].max()))
                           for k in error_keys if k != 'error_num_points'})
    truth = _ground_truth_errors(data_cfg, files, merged['scan_vertices'])
    if truth is not None:
        summary['ground_truth'] = truth
    write_text(work_dir / SUMMARY_NAME, json.dumps(summary, indent=2))
    return results


__all__ = ['register_scans', 'register_batch', 'initial_global_pose', 'surface_errors',
           'prepare_scans', 'write_synthetic_scans', 'list_scan_files', 'merge_chunks',
           'registration_options', 'template_surface_points', 'frame_candidates',
           'RegistrationConfigError',
           'RESULTS_NAME', 'ERRORS_NAME', 'SUMMARY_NAME', 'MESH_DIR', 'GROUND_TRUTH_NAME']
