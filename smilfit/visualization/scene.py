"""A work dir's 3D scene as plain arrays: what the 3D viewer and its offline exports draw.

:func:`load_scene` reads the output folder of ``tools/fit.py`` (``fit_results.h5``),
``tools/infer.py`` (``predictions.h5``) or ``tools/register.py`` (``registrations.npz``)
into a :class:`Scene`: per frame of a timeline, the mesh of every animal, the fitted and
the observed 3D keypoints with their errors, the cameras and (lazily) their images. No
browser, no server: :mod:`.viewer` and :mod:`.scene_export` only draw what is here.

Conventions: world coordinates in the data's units; cameras are OpenCV pinholes
``x_cam = R @ x_world + t`` (+z forward, +y down) with intrinsics ``K`` in pixels.
Arrays are indexed ``(T, A, ...)``: T frames of the timeline, A animal slots (an animal
absent at a frame is NaN there).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from smilfit.cameras.projection import undistort_pixels
from smilfit.cameras.triangulation import triangulate_dlt
from smilfit.engine.config_data import check_component_types
from smilfit.registry import BODY_MODELS
from smilfit.utils import register_all_modules
from .fit_run import (build_registrant, frame_range_mask, load_fit_run, model_outputs,
                      resolve_dataset)
from .overlay import error_colours
from smilfit.datasets import DatasetReader
from smilfit.datasets.hdf5.files import read_h5
from smilfit.datasets.scan_io import load_scan

__all__ = ['Scene', 'SceneCameras', 'load_scene', 'SceneError', 'camera_frustum_pose',
           'camera_up_direction', 'error_point_colours', 'WORK_DIR_KINDS']

PathLike = Union[str, os.PathLike]
#: Result file -> kind of work dir, in the order they are looked for.
WORK_DIR_KINDS = (('fit_results.h5', 'fit'), ('predictions.h5', 'inference'),
                  ('registrations.npz', 'registration'))


class SceneError(ValueError):
    """A work dir cannot be shown; the message names the file and what is missing."""


@dataclass
class SceneCameras:
    """The cameras of every frame (they may change per sample).

    Attributes:
        names: (C,) camera names.
        K: (T, C, 3, 3) intrinsics (pixels).
        R: (T, C, 3, 3) world -> camera rotations.
        t: (T, C, 3) world -> camera translations (world units).
        image_size: (T, C, 2) image ``(width, height)`` in pixels.
        valid: (T, C) bool, the view exists at that frame.
    """

    names: List[str]
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    image_size: np.ndarray
    valid: np.ndarray


@dataclass
class Scene:
    """Everything the viewer draws, per frame of the timeline.

    Attributes:
        kind: ``'fit'``, ``'inference'`` or ``'registration'``.
        title: a label for the scene (work dir and session).
        frame_labels: (T,) labels of the timeline's frames (``'frame 12'``, scan names...).
        faces: (F, 3) int64 triangles of the body model, or None (no meshes).
        vertices: (T, A, V, 3) float32 meshes, NaN where an animal is absent; or None.
        keypoint_names: (K,) names of the keypoints.
        fitted: (T, A, K, 3) float32 fitted 3D keypoints (NaN: not matched / absent).
        observed: (T, A, K, 3) float32 observed 3D keypoints (the dataset's
            ``keypoints_3d``, else triangulated from the 2D observations), or None.
        errors: (T, A, K) float32 error of every fitted keypoint (see ``error_unit``),
            NaN where unknown; or None.
        error_unit: ``'px'`` (median reprojection error over the views) or the world
            units (3D distance).
        cameras: the views' cameras, or None.
        points: per frame an (P_t, 3) float32 point cloud (registration scans), or None.
        point_errors: per frame (P_t,) distance of every point to the mesh, or None.
        units: world units (``'mm'``, ``'m'``, ``''`` when unknown).
        image_reader: ``frame -> [C images (H, W, 3) uint8 or None]``, or None (no images).
        label_places: where each label sits on the fitted body (a fit's report: the model
            point, the marker's depth, the joint moving the skin there), Markdown; or None.
    """

    kind: str
    title: str
    frame_labels: List[str]
    faces: Optional[np.ndarray]
    vertices: Optional[np.ndarray]
    keypoint_names: List[str]
    fitted: Optional[np.ndarray]
    observed: Optional[np.ndarray] = None
    errors: Optional[np.ndarray] = None
    error_unit: str = 'px'
    cameras: Optional[SceneCameras] = None
    points: Optional[List[np.ndarray]] = None
    point_errors: Optional[List[np.ndarray]] = None
    units: str = ''
    image_reader: Optional[Callable[[int], List[Optional[np.ndarray]]]] = field(
        default=None, repr=False)
    label_places: Optional[str] = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_labels)

    @property
    def num_animals(self) -> int:
        for arr in (self.vertices, self.fitted):
            if arr is not None:
                return int(arr.shape[1])
        return 0

    def images(self, frame: int) -> Optional[List[Optional[np.ndarray]]]:
        """The views' images at ``frame`` (C arrays (H, W, 3) uint8, None where a view has
        none), or None when the scene has no images."""
        if self.image_reader is None:
            return None
        return self.image_reader(int(frame))

    def select_frames(self, frames: Sequence[int]) -> 'Scene':
        """A scene of the given timeline positions only (same animals and cameras)."""
        idx = np.asarray(list(frames), dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_frames:
            raise SceneError(f'frame positions {idx.tolist()} are outside 0..'
                             f'{self.num_frames - 1}')
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        cams = None
        if self.cameras is not None:
            c = self.cameras
            cams = SceneCameras(c.names, c.K[idx], c.R[idx], c.t[idx], c.image_size[idx],
                                c.valid[idx])
        reader = None
        if self.image_reader is not None:
            parent = self.image_reader
            reader = lambda i: parent(int(idx[i]))  # noqa: E731
        return Scene(kind=self.kind, title=self.title,
                     frame_labels=[self.frame_labels[i] for i in idx], faces=self.faces,
                     vertices=take(self.vertices), keypoint_names=self.keypoint_names,
                     fitted=take(self.fitted), observed=take(self.observed),
                     errors=take(self.errors), error_unit=self.error_unit, cameras=cams,
                     points=None if self.points is None else [self.points[i] for i in idx],
                     point_errors=None if self.point_errors is None else
                     [self.point_errors[i] for i in idx],
                     units=self.units, image_reader=reader,
                     label_places=self.label_places)

    def drawn_points(self, frame: Optional[int] = None) -> np.ndarray:
        """(N, 3) every finite point drawn (meshes, keypoints, scan points; cameras left out)
        at timeline position ``frame``, or at any frame (None)."""
        pick = (lambda a: a) if frame is None else (lambda a: a[frame])  # noqa: E731
        parts = [pick(a).reshape(-1, 3) for a in (self.vertices, self.fitted, self.observed)
                 if a is not None]
        if self.points:
            parts += [p.reshape(-1, 3) for p in
                      (self.points if frame is None else [self.points[frame]])]
        pts = np.concatenate(parts) if parts else np.zeros((0, 3))
        return pts[np.isfinite(pts).all(-1)]

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """(3,), (3,) min and max corner of everything drawn at any frame (cameras left
        out), for framing views and sizing markers; (-1, 1) where nothing is drawn."""
        pts = self.drawn_points()
        if not len(pts):
            return np.full(3, -1.0), np.full(3, 1.0)
        return pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)

    def scale(self) -> float:
        """The size of the scene (the bounding box's diagonal; > 0)."""
        lo, hi = self.bounds()
        return float(max(np.linalg.norm(hi - lo), 1e-6))


# ---------------------------------------------------------------------------------------
# Geometry helpers shared by the viewer and the exports.

def camera_frustum_pose(R: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """World pose of an OpenCV camera: its (3, 3) camera -> world rotation ``R^T`` and
    (3,) centre ``-R^T t`` (world units)."""
    R = np.asarray(R, dtype=np.float64)
    Rt = R.T
    return Rt, -Rt @ np.asarray(t, dtype=np.float64)


def camera_up_direction(cameras: Optional[SceneCameras]) -> np.ndarray:
    """(3,) unit "up" of the world as the cameras see it: the mean of their ``-y`` axes
    (OpenCV images have +y down), or +z without cameras."""
    if cameras is None or not cameras.valid.any():
        return np.array([0.0, 0.0, 1.0])
    R = cameras.R[cameras.valid]                          # (N, 3, 3)
    ups = -R[:, 1, :]                                     # camera -y in world: row 1 of R
    ups = ups[np.isfinite(ups).all(-1)]
    if not len(ups):
        return np.array([0.0, 0.0, 1.0])
    up = ups.mean(0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def error_point_colours(errors: Optional[np.ndarray], scale: float, n: int,
                        default: Tuple[int, int, int] = (40, 110, 255)) -> np.ndarray:
    """(n, 3) uint8 colours of points by error (green -> yellow -> red at ``scale``; the
    colour scale of the overlay videos); ``default`` for all when there are no errors,
    white where an error is NaN."""
    if errors is None:
        return np.tile(np.asarray(default, np.uint8), (n, 1))
    return error_colours(np.asarray(errors, np.float64).reshape(n), scale)


# ---------------------------------------------------------------------------------------
# Loading.

def load_scene(work_dir: PathLike, *, session: Optional[Union[int, str]] = None,
               frames: Optional[Tuple[Optional[int], Optional[int]]] = None,
               dataset: Optional[PathLike] = None, images: bool = True) -> Scene:
    """Read a work dir of ``tools/fit.py``, ``tools/infer.py`` or ``tools/register.py``.

    Args:
        work_dir: the folder (holding ``fit_results.h5``, ``predictions.h5`` or
            ``registrations.npz``).
        session: fits and predictions: the session (name or index) on the timeline
            (default: the first one in the results).
        frames: ``(first, stop)`` frame numbers ``first <= frame < stop`` (either None: open).
        dataset: fits: the fitted dataset when its recorded path does not resolve.
        images: read the views' images (fits whose dataset holds them).

    Raises:
        SceneError: no known result file in ``work_dir``, or nothing left to show.
        FileNotFoundError: ``work_dir`` does not exist.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise FileNotFoundError(f'{work_dir}: no such folder')
    for name, kind in WORK_DIR_KINDS:
        if (work_dir / name).is_file():
            loader = dict(fit=_load_fit, inference=_load_inference,
                          registration=_load_registration)[kind]
            return loader(work_dir, session=session, frames=frames, dataset=dataset,
                          images=images)
    raise SceneError(f'{work_dir} holds none of {", ".join(n for n, _ in WORK_DIR_KINDS)} '
                     '(the results of tools/fit.py, tools/infer.py, tools/register.py)')


def _pick_session(session: Optional[Union[int, str]], names: Sequence[str],
                  present: np.ndarray, where: Path) -> int:
    """The session index to show: ``session`` by name or index, else the first present."""
    present = np.unique(present)
    if session is None:
        return int(present[0])
    if isinstance(session, str) and session in names:
        sid = list(names).index(session)
    elif str(session).isdigit() and int(session) < len(names):
        sid = int(session)
    else:
        sid = -1
    if sid not in present:
        raise SceneError(f'{where}: unknown session {session!r}; sessions with results: '
                         f'{[names[i] if i < len(names) else str(i) for i in present]}')
    return sid


def _timeline(frame_numbers: np.ndarray, instances: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows -> (timeline position, animal slot); and the timeline's frame numbers (T,).

    Animal slots are the rows' instance numbers, compacted to 0..A-1."""
    unique_frames, position = np.unique(frame_numbers, return_inverse=True)
    _, slot = np.unique(instances, return_inverse=True)
    return position.reshape(-1), slot.reshape(-1), unique_frames


def _scatter(values: np.ndarray, position: np.ndarray, slot: np.ndarray, T: int, A: int
             ) -> np.ndarray:
    """(N, ...) per row -> (T, A, ...) float32, NaN where no row lands."""
    out = np.full((T, A) + values.shape[1:], np.nan, dtype=np.float32)
    out[position, slot] = values
    return out


def _nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():      # all-NaN slices: NaN, no warning
        warnings.simplefilter('ignore', RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def triangulate_observations(keypoints_2d: np.ndarray, visible: np.ndarray, valid: np.ndarray,
                             K: np.ndarray, R: np.ndarray, t: np.ndarray,
                             dist: Optional[np.ndarray]) -> np.ndarray:
    """(N, K, 3) 3D points triangulated (DLT) from (N, C, K, 2) observed pixels.

    ``visible`` (N, C, K) and ``valid`` (N, C) select the views; points seen in fewer than
    two views are NaN. Distortion is removed first."""
    import torch

    uv = torch.as_tensor(keypoints_2d, dtype=torch.float64)
    Kt = torch.as_tensor(K, dtype=torch.float64)
    und = undistort_pixels(uv, Kt, None if dist is None else
                           torch.as_tensor(dist, dtype=torch.float64))
    P = Kt @ torch.cat([torch.as_tensor(R, dtype=torch.float64),
                        torch.as_tensor(t, dtype=torch.float64)[..., None]], dim=-1)
    weights = torch.as_tensor(visible.astype(bool) & valid.astype(bool)[..., None],
                              dtype=torch.float64)
    weights = weights * torch.isfinite(und).all(-1)
    und = torch.nan_to_num(und)
    return triangulate_dlt(und, P, weights).numpy()


def _load_fit(work_dir: Path, *, session, frames, dataset, images: bool) -> Scene:
    results = work_dir / 'fit_results.h5'
    run = load_fit_run(work_dir)
    with read_h5(results, 'fit results', written_whole=True) as f:
        data_names = [s.decode() if isinstance(s, bytes) else str(s)
                      for s in f['data_keypoint_names'][()]]
        fitted_all = f['fitted_keypoints_3d'][()] if 'fitted_keypoints_3d' in f else None
        point_px = f['metrics/reprojection_point_px'][()] \
            if 'metrics/reprojection_point_px' in f else None
    data_path = resolve_dataset(run, dataset)
    reader = None
    if data_path is not None:
        reader = DatasetReader(data_path)
        if list(reader.keypoint_names) != data_names:
            raise SceneError(f'{data_path} has the keypoints {list(reader.keypoint_names)}, '
                             f'but the fit in {work_dir} was made on data with {data_names}; '
                             'pass the dataset that was fitted (--dataset)')
    else:
        warnings.warn(f'{work_dir}: the fitted dataset {run.dataset!r} was not found: no '
                      'cameras, images or observed keypoints (pass --dataset)', stacklevel=2)

    sessions = run.samples['session'].astype(np.int64)
    frame_ids = run.samples['frame'].astype(np.int64)
    names = list(reader.session_names) if reader is not None else \
        [str(s) for s in range(int(sessions.max()) + 1)]
    sid = _pick_session(session, names, sessions, work_dir)
    rows = np.nonzero((sessions == sid) & frame_range_mask(frame_ids, frames))[0]
    if not len(rows):
        raise SceneError(f'{results}: no fitted sample of session {names[sid]!r} in frames '
                         f'{frames}')
    index = run.samples['index'][rows].astype(np.int64)
    data = None
    instances = np.zeros(len(rows), np.int64)
    if reader is not None:
        keys = ['K', 'R', 't', 'dist', 'valid', 'image_size', 'keypoints_2d', 'visible',
                'instance']
        if 'keypoints_3d' in reader.h5:
            keys.append('keypoints_3d')
        data = reader.read(index, keys=keys)
        instances = np.asarray(data['instance'], np.int64)
    position, slot, frame_numbers = _timeline(frame_ids[rows], instances)
    T, A = len(frame_numbers), int(slot.max()) + 1

    registrant = build_registrant(run, data_names)
    model = registrant.body_model
    if run.vertices is not None:
        verts = run.vertices[rows]
    else:
        verts = model_outputs(model, run.params, rows)[0]
    vertices = _scatter(verts.astype(np.float32), position, slot, T, A)
    fitted = errors = observed = cameras = None
    if fitted_all is not None:
        fitted = _scatter(fitted_all[rows], position, slot, T, A)
    if point_px is not None:
        errors = _scatter(_nanmedian(point_px[rows], axis=1), position, slot, T, A)
    image_reader = None
    if data is not None:
        obs = data.get('keypoints_3d')
        obs = np.full(data['keypoints_2d'].shape[:1] + data['keypoints_2d'].shape[2:3] + (3,),
                      np.nan) if obs is None else np.array(obs, np.float64)
        # Samples without 3D keypoints in the dataset: triangulate their 2D observations.
        missing = ~np.isfinite(obs).any(axis=(1, 2))
        if missing.any():
            obs[missing] = triangulate_observations(
                *(np.asarray(data[k])[missing] for k in ('keypoints_2d', 'visible', 'valid',
                                                         'K', 'R', 't')),
                None if data.get('dist') is None else np.asarray(data['dist'])[missing])
        observed = _scatter(np.asarray(obs, np.float32), position, slot, T, A)
        # The cameras of a frame: those of its first animal (one rig per frame).
        first = np.full(T, -1, np.int64)
        for r in range(len(rows) - 1, -1, -1):
            first[position[r]] = r
        cam_names = list(reader.camera_names[sid])
        C = data['K'].shape[1]
        cam_names = (cam_names + [f'view{c}' for c in range(len(cam_names), C)])[:C]
        cameras = SceneCameras(names=cam_names, K=data['K'][first].astype(np.float64),
                               R=data['R'][first].astype(np.float64),
                               t=data['t'][first].astype(np.float64),
                               image_size=np.asarray(data['image_size'][first], np.float64),
                               valid=np.asarray(data['valid'][first], bool))
        if images and 'views/images' in reader.h5:
            sample_of_frame = index[first]

            def image_reader(i: int, sample_of_frame=sample_of_frame, reader=reader):
                return reader.read_images(int(sample_of_frame[i]))
    units = str(reader.units) if reader is not None else ''
    return Scene(kind='fit', title=f'{work_dir.name} · {names[sid]}',
                 frame_labels=[f'frame {n}' for n in frame_numbers],
                 faces=model.faces.cpu().numpy().astype(np.int64), vertices=vertices,
                 keypoint_names=data_names, fitted=fitted, observed=observed, errors=errors,
                 error_unit='px', cameras=cameras, units=units, image_reader=image_reader,
                 label_places=_label_places(work_dir))


def _label_places(work_dir: Path) -> Optional[str]:
    """The fit report's table of where each label sits (``fit_quality.json``), Markdown;
    None where the report has none."""
    from smilfit.evaluation.label_places import label_places_markdown
    path = work_dir / 'fit_quality.json'    # the fit's report (named by apis, a layer up)
    if not path.is_file():
        return None
    try:
        places = json.loads(path.read_text()).get('label_places') or {}
    except (OSError, ValueError):
        return None
    return label_places_markdown(places) or None


_MESH_NAME = re.compile(r'^(?P<session>.*)_frame_(?P<frame>\d+)_inst(?P<inst>\d+)$')


def _load_inference(work_dir: Path, *, session, frames, dataset, images: bool) -> Scene:
    """``tools/infer.py`` output: predicted 3D keypoints and cameras per item; meshes from
    ``meshes/*.obj`` when the run saved them (``--save-meshes``), else posed from the
    predicted parameters by the body model the run recorded."""
    path = work_dir / 'predictions.h5'
    with read_h5(path, 'network predictions', written_whole=True) as f:
        if f.attrs.get('format') != 'smilfit-inference':
            raise SceneError(f'{path}: not a smilfit inference result')
        for key in ('frame', 'instance', 'keypoints_3d'):
            if key not in f:
                raise SceneError(f'{path}: no {key!r} dataset')
        frame_ids = f['frame'][()].astype(np.int64)
        instances = f['instance'][()].astype(np.int64)
        kp3d = f['keypoints_3d'][()].astype(np.float32)
        cams = {k: f[f'cameras/{k}'][()] for k in ('K', 'R', 't')
                if f'cameras/{k}' in f}
        kp_names = json.loads(f.attrs['keypoint_names']) if 'keypoint_names' in f.attrs \
            else [f'kp{i}' for i in range(kp3d.shape[1])]
        cam_names = json.loads(f.attrs['camera_names']) if 'camera_names' in f.attrs \
            else None
        body_model = json.loads(f.attrs['body_model']) if 'body_model' in f.attrs else None
        params = {k: f['params'][k][()] for k in f['params']} if 'params' in f else {}
    rows = np.nonzero(frame_range_mask(frame_ids, frames))[0]
    if not len(rows):
        raise SceneError(f'{path}: no prediction in frames {frames}')
    position, slot, frame_numbers = _timeline(frame_ids[rows], instances[rows])
    T, A = len(frame_numbers), int(slot.max()) + 1
    fitted = _scatter(kp3d[rows], position, slot, T, A)
    vertices = faces = None
    meshes = sorted((work_dir / 'meshes').glob('*.obj')) if (work_dir / 'meshes').is_dir() \
        else []
    if meshes:
        import trimesh
        found = {}
        for m in meshes:
            match = _MESH_NAME.match(m.stem)
            if match:
                found[(int(match['frame']), int(match['inst']))] = m
        verts = []
        for r in rows:
            mesh_path = found.get((int(frame_ids[r]), int(instances[r])))
            if mesh_path is None:
                verts = None
                break
            mesh = trimesh.load(mesh_path, process=False, force='mesh')
            if faces is None:
                faces = np.asarray(mesh.faces, np.int64)
            verts.append(np.asarray(mesh.vertices, np.float32))
        if verts:
            vertices = _scatter(np.stack(verts), position, slot, T, A)
        else:
            faces = None
    if vertices is None and body_model is not None and params:
        posed = _predicted_meshes(path, body_model, params, rows)
        if posed is not None:
            vertices, faces = _scatter(posed[0], position, slot, T, A), posed[1]
    cameras = None
    if len(cams) == 3:
        first = np.full(T, -1, np.int64)
        for r in range(len(rows) - 1, -1, -1):
            first[position[r]] = r
        sel = rows[first]
        K = cams['K'][sel].astype(np.float64)
        if K.ndim == 3:     # single-view files: (N, 3, 3)
            K, Rm, tv = K[:, None], cams['R'][sel][:, None], cams['t'][sel][:, None]
        else:
            Rm, tv = cams['R'][sel], cams['t'][sel]
        C = K.shape[1]
        size = np.stack([2 * K[..., 0, 2], 2 * K[..., 1, 2]], axis=-1)  # no sizes stored
        names = list(cam_names or [])
        names = (names + [f'view{c}' for c in range(len(names), C)])[:C]
        cameras = SceneCameras(names=names, K=K, R=np.asarray(Rm, np.float64),
                               t=np.asarray(tv, np.float64), image_size=size,
                               valid=np.isfinite(K).all((-1, -2)))
    return Scene(kind='inference', title=work_dir.name,
                 frame_labels=[f'frame {n}' for n in frame_numbers], faces=faces,
                 vertices=vertices, keypoint_names=[str(n) for n in kp_names], fitted=fitted,
                 cameras=cameras)


def _predicted_meshes(path: Path, body_model: dict, params: dict, rows: np.ndarray
                      ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The meshes of a network's predicted parameters: (R, V, 3) float32 vertices of
    ``rows`` and the (F, 3) faces, posed by the body model ``tools/infer.py`` recorded (data
    from the file: registered component types only), or None with a warning where its
    model file is not here."""
    check_component_types(body_model, f'{path} (body_model)')
    model_path = body_model.get('model_path')
    if isinstance(model_path, str) and not Path(model_path).is_file():
        warnings.warn(f'{path}: the body model file {model_path} is not here: no meshes',
                      stacklevel=3)
        return None
    register_all_modules(init_default_scope=False)
    model = BODY_MODELS.build(body_model)
    verts = model_outputs(model, params, rows)[0]
    return verts.astype(np.float32), model.faces.cpu().numpy().astype(np.int64)


def _load_registration(work_dir: Path, *, session, frames, dataset, images: bool) -> Scene:
    """``tools/register.py`` output: one registered mesh per scan (in the scan's frame) with
    the scan's points coloured by their distance to it; the timeline runs over the scans."""
    from scipy.spatial import cKDTree
    path = work_dir / 'registrations.npz'
    with np.load(path, allow_pickle=False) as z:
        for key in ('names', 'scan_vertices'):
            if key not in z.files:
                raise SceneError(f'{path}: no {key!r} array')
        names = [str(n) for n in z['names']]
        files = [str(n) for n in z['files']] if 'files' in z.files else [''] * len(names)
        verts = z['scan_vertices'].astype(np.float32)
    keep = np.arange(len(names))
    if frames is not None:
        keep = keep[frame_range_mask(keep, frames)]
    if not len(keep):
        raise SceneError(f'{path}: no scan in positions {frames}')
    faces = _registration_faces(work_dir, names, verts.shape[1])
    points, point_errors = [], []
    for i in keep:
        scan = Path(files[i])
        if files[i] and scan.is_file():
            pts = np.asarray(load_scan(scan).points, np.float32)
            d, _ = cKDTree(verts[i]).query(pts)
            points.append(pts)
            point_errors.append(d.astype(np.float32))
        else:
            points.append(np.zeros((0, 3), np.float32))
            point_errors.append(np.zeros(0, np.float32))
    has_points = any(len(p) for p in points)
    return Scene(kind='registration', title=work_dir.name,
                 frame_labels=[names[i] for i in keep], faces=faces,
                 vertices=verts[keep][:, None], keypoint_names=[], fitted=None,
                 points=points if has_points else None,
                 point_errors=point_errors if has_points else None, error_unit='')


def _registration_faces(work_dir: Path, names: Sequence[str], V: int) -> np.ndarray:
    """The body model's faces: from a saved mesh (``meshes/<scan>.*``), else from the body
    model of the run's config (``chunks/config.json``)."""
    mesh_dir = work_dir / 'meshes'
    if mesh_dir.is_dir():
        import trimesh
        for name in names:
            for ext in ('.ply', '.obj', '.off', '.stl'):
                p = mesh_dir / f'{name}{ext}'
                if p.is_file():
                    mesh = trimesh.load(p, process=False, force='mesh')
                    if len(mesh.vertices) == V and len(mesh.faces):
                        return np.asarray(mesh.faces, np.int64)
    stamp = work_dir / 'chunks' / 'config.json'
    if not stamp.is_file():
        raise SceneError(f'{work_dir}: no meshes/ and no chunks/config.json to take the body '
                         "model's faces from")
    register_all_modules(init_default_scope=False)
    cfg = json.loads(stamp.read_text())
    check_component_types(cfg, str(stamp))   # data from wherever the work dir came from
    model = BODY_MODELS.build(cfg['registrant']['body_model'])
    return model.faces.cpu().numpy().astype(np.int64)
