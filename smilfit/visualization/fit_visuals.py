"""Everything people look at after a fit, from a work dir: videos, meshes, animations, plots.

:func:`export_fit_visuals` reads what :func:`smilfit.apis.fitting.fit_dataset` left in a
work dir (``fit_results.h5`` and the config stamp ``chunks/config.json``), rebuilds the
body model and the keypoint matching from that config, reads cameras, images and observed
keypoints from the fitted dataset, and writes, under ``<work_dir>/visuals/``:

- ``<session>.mp4``: per session, every camera view with the fitted mesh and the
  observed vs fitted keypoints (coloured by error), frame after frame;
- ``meshes/<session>/frame_<n>.obj|ply``: one mesh per fitted frame;
- ``<session>_params.npz`` + ``.json``: the fitted parameters as an animation;
- ``loss_curves.png``, ``per_joint_errors.png``, ``reprojection_per_camera_<session>.png``.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .animation import save_animation
from .fit_run import (FitRun, build_registrant, frame_range_mask, load_fit_run,
                      model_outputs, resolve_dataset)
from .mesh_export import export_meshes
from .plots import plot_loss_curves, plot_per_joint_errors, plot_reprojection_per_camera
from .video import render_fit_video
from smilfit.cameras import project_points
from smilfit.datasets import DatasetReader
from smilfit.body_models.keypoint_naming import model_point_names
from smilfit.datasets.hdf5.files import read_h5

__all__ = ['export_fit_visuals', 'VISUALS_DIR']

PathLike = Union[str, os.PathLike]
VISUALS_DIR = 'visuals'


def _skeleton(body_model, model_names: Sequence[str]) -> List[Tuple[int, int]]:
    """Bones between matched points that are joints of the model (child, parent)."""
    joint_names = list(body_model.joint_names)
    parents = [int(p) for p in body_model.parents]
    position = {n: i for i, n in enumerate(model_names)}
    edges = []
    for name, i in position.items():
        if name in joint_names:
            p = parents[joint_names.index(name)]
            if p >= 0 and joint_names[p] in position:
                edges.append((i, position[joint_names[p]]))
    return edges


def _safe(name: str) -> str:
    return re.sub(r'[^\w.\-]+', '_', str(name)).strip('_') or 'session'


def export_fit_visuals(work_dir: PathLike, *, out_dir: Optional[PathLike] = None,
                       video: bool = True, meshes: bool = False, animation: bool = True,
                       plots: bool = True, sessions: Optional[Sequence[Union[int, str]]] = None,
                       frames: Optional[Tuple[Optional[int], Optional[int]]] = None,
                       mesh_format: str = 'obj', fps: float = 25.0, images: bool = True,
                       error_scale_px: float = 10.0, dataset: Optional[PathLike] = None,
                       config: Optional[Union[PathLike, Mapping]] = None,
                       progress: bool = True) -> Dict[str, List[Path]]:
    """Write videos, meshes, animations and plots of a fitting run.

    Args:
        work_dir: a ``tools/fit.py`` output folder (``fit_results.h5``, ``chunks/config.json``).
        out_dir: where to write (default ``<work_dir>/visuals``).
        video: one ``.mp4`` per session (needs the dataset: cameras and images).
        meshes: one mesh file per fitted frame, ``meshes/<session>/frame_<n>.<fmt>``.
        animation: ``<session>_params.npz/.json`` per session.
        plots: loss curves, per-joint errors, reprojection error per camera.
        sessions: session names or indices to export (default all fitted ones).
        frames: ``(first, stop)`` frame-number range ``first <= frame < stop`` (either
            None: open), applied within every session.
        mesh_format: ``'obj'`` or ``'ply'``.
        fps: video and animation frame rate.
        images: draw over the dataset's images (False: grey backgrounds).
        error_scale_px: keypoint error at the end of the colour scale.
        dataset: the fitted dataset, when the recorded path does not resolve.
        config: the fit's config, when the work dir has no ``chunks/config.json``.
        progress: tqdm progress bars.

    Returns:
        ``{'video': [...], 'meshes': [...], 'animation': [...], 'plots': [...]}`` paths.

    Raises:
        FileNotFoundError: no results, no config, or (for videos) no dataset.
        ValueError: nothing is left after the session/frame selection.
    """

    run = load_fit_run(work_dir, config)
    out_dir = Path(out_dir) if out_dir is not None else run.work_dir / VISUALS_DIR
    written: Dict[str, List[Path]] = {'video': [], 'meshes': [], 'animation': [], 'plots': []}
    data_path = resolve_dataset(run, dataset)
    if data_path is None and (video or plots):
        if video:
            raise FileNotFoundError(
                f'the fitted dataset {run.dataset!r} was not found (tried it as given, '
                f'relative to {run.work_dir} and inside it); pass dataset=... (--dataset) '
                'or leave videos out')
        warnings.warn(f'dataset {run.dataset!r} not found: plots use fit_results.h5 only')
    with read_h5(run.work_dir / 'fit_results.h5', 'fit results', written_whole=True) as f:
        data_names = [s.decode() if isinstance(s, bytes) else str(s)
                      for s in f['data_keypoint_names'][()]]
    reader = DatasetReader(data_path) if data_path is not None else None
    if reader is not None and list(reader.keypoint_names) != data_names:
        # Another dataset's keypoints would be matched (or not) by name and drawn as if
        # they were the fitted ones.
        raise ValueError(f'{data_path} has the keypoints {list(reader.keypoint_names)}, but '
                         f'the fit in {run.work_dir} was made on data with {data_names}; '
                         'pass the dataset that was fitted (--dataset)')
    registrant = build_registrant(run, data_names)
    model = registrant.body_model
    handler = registrant.keypoint_handler()

    # Which samples, grouped by session, in frame order.
    session_ids = run.samples['session'].astype(np.int64)
    frame_ids = run.samples['frame'].astype(np.int64)
    names = (reader.session_names if reader is not None else
             [str(s) for s in range(int(session_ids.max()) + 1)])
    keep = np.ones(len(session_ids), dtype=bool)
    if sessions is not None:
        wanted = set()
        for s in sessions:
            if isinstance(s, str) and s in names:
                wanted.add(names.index(s))
            elif str(s).isdigit() and int(s) < len(names):
                wanted.add(int(s))
            else:
                raise ValueError(f'unknown session {s!r}; fitted sessions: '
                                 f'{[names[i] for i in np.unique(session_ids)]}')
        keep &= np.isin(session_ids, sorted(wanted))
    keep &= frame_range_mask(frame_ids, frames)
    if not keep.any():
        raise ValueError(f'no fitted sample is left after selecting sessions={sessions} and '
                         f'frames={frames}')

    all_errors, all_matched = [], None
    for sid in np.unique(session_ids[keep]):
        rows = np.nonzero(keep & (session_ids == sid))[0]
        rows = rows[np.argsort(frame_ids[rows], kind='stable')]
        session = _safe(names[sid])
        verts, kps, joints, points = model_outputs(model, run.params, rows, handler)
        if run.vertices is not None:
            verts = run.vertices[rows].astype(np.float64)
        frame_numbers = frame_ids[rows]

        if meshes:
            written['meshes'] += export_meshes(
                out_dir / 'meshes' / session, verts.astype(np.float32),
                model.faces.cpu().numpy(), names=[f'frame_{n:06d}' for n in frame_numbers],
                fmt=mesh_format, progress=progress)
        if animation:
            params = {k: v[rows] for k, v in run.params.items()}
            params['frame'] = frame_numbers
            written['animation'] += list(save_animation(
                out_dir / f'{session}_params', params,
                meta=dict(session=str(names[sid]), work_dir=str(run.work_dir),
                          stages=list(run.stages)),
                fps=fps, body_model=run.config['registrant'].get('body_model')))

        if reader is None:
            continue
        data = reader.read(run.samples['index'][rows],
                           keys=['K', 'R', 't', 'dist', 'valid', 'image_size', 'keypoints_2d',
                                 'visible'])
        cams = {k: data[k] for k in ('K', 'R', 't', 'dist') if k in data}
        valid = data['valid']
        observed = fitted = errors = None
        matched_names = None
        if handler is not None:
            m_idx = handler.model_index.cpu().numpy()
            d_idx = handler.data_index.cpu().numpy()
            point_names = _point_names(model, handler.source)
            matched_names = [point_names[i] for i in m_idx]
            pts = torch.as_tensor(points[:, m_idx])[:, None]            # (T, 1, M, 3)
            fitted = project_points(pts, torch.as_tensor(cams['K']), torch.as_tensor(cams['R']),
                                    torch.as_tensor(cams['t']),
                                    None if 'dist' not in cams else torch.as_tensor(
                                        cams['dist'])).numpy()           # (T, C, M, 2)
            observed = data['keypoints_2d'][:, :, d_idx].astype(np.float64)
            if 'visible' in data:
                observed[~data['visible'][:, :, d_idx].astype(bool)] = np.nan
            observed[~valid.astype(bool)] = np.nan
            errors = np.linalg.norm(fitted - observed, axis=-1)          # (T, C, M)
            all_errors.append(errors)
            all_matched = matched_names
        cam_names = (reader.camera_names[sid] if sid < len(reader.camera_names) else None)
        C = cams['K'].shape[1]
        if cam_names is not None and len(cam_names) != C:
            cam_names = (list(cam_names) + [f'cam{c}' for c in range(len(cam_names), C)])[:C]

        if video:
            index = run.samples['index'][rows]

            def frame_images(t: int, index=index):
                return reader.read_images(int(index[t])) if images else None
            written['video'].append(render_fit_video(
                out_dir / f'{session}.mp4', verts, model.faces.cpu().numpy(), cams,
                frames=frame_images, image_size=data['image_size'],
                keypoints_observed=observed, keypoints_fitted=fitted, view_valid=valid,
                camera_names=cam_names, frame_labels=[f'frame {n}' for n in frame_numbers],
                fps=fps, error_scale_px=error_scale_px,
                skeleton=_skeleton(model, matched_names) if matched_names else None,
                progress=progress))
        if plots and errors is not None:
            written['plots'].append(out_dir / f'reprojection_per_camera_{session}.png')
            plot_reprojection_per_camera(errors, cam_names, written['plots'][-1],
                                         title=f'reprojection error per camera ({session})')
    if plots:
        out_dir.mkdir(parents=True, exist_ok=True)
        if run.history:
            written['plots'].append(out_dir / 'loss_curves.png')
            plot_loss_curves(run.history, written['plots'][-1])
        elif run.losses:
            # No per-iteration history in the results: the final loss terms per sample.
            written['plots'].append(out_dir / 'final_losses.png')
            plot_loss_curves({'final': {k: v[keep] for k, v in run.losses.items()}},
                             written['plots'][-1], xlabel='sample',
                             title='final loss per sample')
        if all_errors:
            with warnings.catch_warnings():      # all-NaN columns: a NaN, no warning
                warnings.simplefilter('ignore', RuntimeWarning)
                per_frame = np.concatenate([np.nanmean(e, axis=1) for e in all_errors])
            written['plots'].append(out_dir / 'per_joint_errors.png')
            plot_per_joint_errors(per_frame, all_matched, written['plots'][-1],
                                  title='reprojection error per keypoint')
        elif 'reprojection_px' in run.metrics:
            written['plots'].append(out_dir / 'reprojection_per_camera.png')
            plot_reprojection_per_camera(run.metrics['reprojection_px'][keep], None,
                                         written['plots'][-1])
    if reader is not None:
        reader.close()
    return written


def _point_names(body_model, source: str) -> List[str]:
    return model_point_names(body_model, source)
