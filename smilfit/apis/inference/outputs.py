"""The outputs of a run: per-chunk arrays in source pixels (``chunks/chunk_*.npz``), merged
into ``predictions.h5``, the ``.slp`` of predicted instances, the overlay video and mesh
file names."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ...body_models.parameters import MODEL_INPUTS
from ...cameras.projection import project_points_numpy
from ...datasets.hdf5.files import checksum_options
from ...datasets.ingest_images import apply_affine
from ...utils.atomic import atomic_path
from .hdf5_source import HDF5Frames
from .smoothing import CameraSmoother
from .sources import FrameSource
from smilfit.datasets.slp_export import SlpPredictionWriter
from smilfit.visualization import VideoWriter, draw_keypoints, overlay_mesh, render_mesh, view_grid

#: Chunk files are ``chunks/<CHUNK_PREFIX><k:05d>.npz``.
CHUNK_PREFIX = 'chunk_'


def _chunk_arrays(model, preds: Sequence[Mapping[str, Any]], items: Sequence[Tuple[int, int]],
                  source: FrameSource, smoother: Optional[CameraSmoother],
                  save_features: bool, want_vertices: bool
                  ) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """Per-item arrays of one chunk (source pixels), and vertices when wanted."""
    n = len(preds)
    params = {k: torch.stack([p['pred_params'][k] for p in preds]) for k in preds[0]['pred_params']}
    body = model.body_model
    with torch.no_grad():
        out = body(**{k: v.to(body.dtype) for k, v in params.items() if k in MODEL_INPUTS},
                   return_vertices=want_vertices)
    arrays: Dict[str, np.ndarray] = {
        'frame': np.array([source.meta(i)['frame'] for i, _ in items], np.int64),
        'item': np.array([i for i, _ in items], np.int64),
        'instance': np.array([j for _, j in items], np.int64),
        # the recording each item is from (unicode: npz stores it without pickling)
        'session': np.array([str(source.meta(i)['session']) for i, _ in items], dtype=str),
        'joints': out.joints.float().numpy(),
        'keypoints_3d': np.stack([p['pred_keypoints_3d'].double().numpy() for p in preds]),
    }
    for k, v in params.items():
        arrays[f'param_{k}'] = v.float().numpy()
    kp2d, cams = [], {k: [] for k in ('K', 'R', 't', 'dist')}
    for r, ((i, j), p) in enumerate(zip(items, preds)):
        Ainv = np.linalg.inv(p['crop'])                          # model input -> source
        pc = {k: p['pred_cameras'][k].double().numpy() for k in cams}
        K = Ainv @ pc['K']
        t = pc['t']
        if smoother is not None:
            # Smoothed in source pixels (crops move between frames), then re-projected.
            K, t = smoother(j, K, t)
            uv = project_points_numpy(arrays['keypoints_3d'][r][None], K, pc['R'], t,
                                      pc['dist'])[0]
        else:
            uv = apply_affine(Ainv, p['pred_keypoints_2d'].double().numpy())
        kp2d.append(uv)
        for k, v in (('K', K), ('R', pc['R']), ('t', t), ('dist', pc['dist'])):
            cams[k].append(v)
    arrays['keypoints_2d'] = np.stack(kp2d).astype(np.float32)
    for k, v in cams.items():
        arrays[f'camera_{k}'] = np.stack(v)
    arrays['crop'] = np.stack([p['crop'] for p in preds])
    if save_features:
        for k in preds[0].get('features', {}):
            arrays[f'feature_{k}'] = torch.stack(
                [p['features'][k] for p in preds]).float().numpy()
    if smoother is not None:
        arrays.update(smoother.to_arrays())
    verts = out.vertices.float().numpy() if want_vertices and out.vertices is not None \
        else None
    assert len(arrays['frame']) == n
    return arrays, verts


def _mesh_name(session: str, frame: int, instance: int) -> str:
    """``<session>_frame_<n>_inst<i>`` with the characters file names allow."""
    import re
    safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', str(session)).strip('.') or 'session'
    return f'{safe}_frame_{int(frame):06d}_inst{int(instance)}'


def _chunk_paths(chunk_dir: Path) -> List[Path]:
    return sorted(chunk_dir.glob(f'{CHUNK_PREFIX}*.npz'))


def _chunk_len(path: Path) -> int:
    """Items in a chunk file (0 for a chunk of frames without instances)."""
    with np.load(path) as z:
        return int(z['frame'].shape[0])


def _merge_h5(chunk_paths: Sequence[Path], out_path: Path, attrs: Mapping[str, Any]) -> None:
    """Stream the chunk files into one HDF5 file (one chunk in memory at a time)."""
    import h5py
    skip = ('smooth_slots', 'smooth_K', 'smooth_t')
    with atomic_path(out_path) as tmp:
        with h5py.File(tmp, 'w') as f:
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if not isinstance(v, (str, int, float)) else v
            for path in chunk_paths:
                with np.load(path) as z:
                    for key in z.files:
                        if key in skip:
                            continue
                        data = z[key]
                        if data.dtype.kind == 'U':   # text: variable-length UTF-8
                            data = data.astype(object)
                        group, _, name = key.partition('_')
                        dest = {'param': f'params/{name}', 'camera': f'cameras/{name}',
                                'feature': f'features/{name}'}.get(group, key) if name else key
                        if dest not in f:
                            f.create_dataset(dest, data=data, maxshape=(None,) + data.shape[1:],
                                             chunks=True, dtype=h5py.string_dtype()
                                             if data.dtype == object else None,
                                             **checksum_options(data.dtype, data.shape))
                        else:
                            ds = f[dest]
                            ds.resize(ds.shape[0] + data.shape[0], axis=0)
                            ds[-data.shape[0]:] = data


def _write_slp(chunk_paths: Sequence[Path], out_path: Path, source: FrameSource,
               node_names: Sequence[str], edges: Sequence[Tuple[int, int]],
               tracks: Optional[int]) -> Path:
    hdf5 = isinstance(source, HDF5Frames)
    # A calibrated rig's videos (fixed cameras): a sleap-io RecordingSession with the
    # calibration, each frame's animals grouped across cameras with their 3D points.
    rig = bool(getattr(source, 'calibrated', False)) and not hdf5 and source.num_views > 1
    sessions = []
    if rig:
        cams = source.cameras(0)
        sessions = [dict(videos=list(range(source.num_views)), cameras=[
            dict(name=str(n), K=cams['K'][c], dist=cams['dist'][c], R=cams['R'][c],
                 t=cams['t'][c], size=tuple(source.views[c].size))
            for c, n in enumerate(source.camera_names)])]
    writer = SlpPredictionWriter(node_names, source.video_refs, edges=edges, tracks=tracks,
                                 provenance=dict(model='smilfit regressor'),
                                 sessions=sessions)
    for path in chunk_paths:
        with np.load(path) as z:
            kp, frames, items, inst = z['keypoints_2d'], z['frame'], z['item'], z['instance']
            kp3d = z['keypoints_3d'] if rig else None
        for r in range(len(frames)):
            views = kp[r].astype(np.float64)                     # (C, K, 2)
            if hdf5:
                views = source.to_source(int(items[r]), views)
            group = [int(inst[r])] if rig else None
            for c in range(kp.shape[1]):
                pts = views[c]
                video = source.video_index(int(items[r]), c) if hdf5 else c
                writer.add(video, int(frames[r]), pts[None],
                           track_ids=[int(inst[r])] if tracks else None, groups=group)
            if rig:
                writer.add_3d(0, int(frames[r]), kp3d[r][None], group)
    return writer.save(out_path)


def _skeleton_edges(model) -> List[Tuple[int, int]]:
    """Edges between data keypoints that are joints whose parent joint is also one."""
    body = model.body_model
    names = list(model.keypoint_names)
    joint_names = list(body.joint_names)
    parents = body.parents.tolist() if hasattr(body.parents, 'tolist') else list(body.parents)
    index = {n: i for i, n in enumerate(names)}
    edges = []
    for j, name in enumerate(joint_names):
        p = parents[j]
        if p is None or p < 0:
            continue
        if name in index and joint_names[p] in index:
            edges.append((index[joint_names[p]], index[name]))
    return edges


def _render_video(chunk_paths: Sequence[Path], out_path: Path, source: FrameSource, model,
                  mode: str, scale: float, mesh: bool, edges, progress: bool) -> Path:
    """Second pass over the source: draw predictions (and meshes) on every frame."""
    from tqdm import tqdm

    faces = model.body_model.faces.cpu().numpy()
    total = sum(_chunk_len(p) for p in chunk_paths)
    bar = tqdm(total=total, desc='video', disable=not progress)
    with VideoWriter(out_path, fps=source.fps) as video:
        for path in chunk_paths:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            items = arrays['item']
            verts = None
            if mesh:
                params = {k[6:]: torch.as_tensor(v) for k, v in arrays.items()
                          if k.startswith('param_')}
                body = model.body_model
                with torch.no_grad():
                    verts = body(**{k: v.to(body.dtype) for k, v in params.items()},
                                 return_vertices=True).vertices.double().numpy()
            for item in np.unique(items):
                rows = np.flatnonzero(items == item)
                frames = source.read(int(item))
                panels = []
                for c, img in enumerate(frames):
                    S = np.diag([scale, scale, 1.0])
                    h, w = img.shape[:2]
                    H, W = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
                    base = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA) \
                        if (H, W) != (h, w) else img.copy()
                    drawn = base.copy()
                    for r in rows:
                        if verts is not None:
                            Ks = S @ arrays['camera_K'][r, c]
                            Ks[:2, 2] += 0.5 * scale - 0.5
                            rend = render_mesh(verts[r], faces, Ks, arrays['camera_R'][r, c],
                                               arrays['camera_t'][r, c],
                                               arrays['camera_dist'][r, c], height=H, width=W)
                            drawn = overlay_mesh(drawn, rend, alpha=0.5)
                        pts = arrays['keypoints_2d'][r, c].astype(np.float64)
                        pts = (pts + 0.5) * scale - 0.5
                        drawn = draw_keypoints(drawn, None, pts, skeleton=edges,
                                               scale_bar=False, radius=max(1, int(3 * scale)))
                    panels.append(np.concatenate([base, drawn], 1) if mode == 'side_by_side'
                                  else drawn)
                frame = panels[0] if len(panels) == 1 else view_grid(
                    panels, labels=list(source.camera_names))
                video.write(frame)
                bar.update(len(rows))
    bar.close()
    return out_path
