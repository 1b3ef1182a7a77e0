"""Rendered training data in the user's own rig: the fitted animal, posed around its fitted
poses, rendered through the session's calibrated cameras over the session's background.

A network trained on a few hundred real frames sees few poses. This generator makes as
many more as wanted from what the user already has: a prepared session with crops
(``tools/preprocess_sleap.py --crop-mode bbox_crop``), a fit of it (``tools/fit.py``) and
the videos. Every rendered sample looks like a sample of that file (same cameras, same
crop rule and size, same keypoints), so a training config reads it in place of, or
before, the real frames (``tools/render_rig.py``).

- **Background**: per camera, the median of frames spread over the video (the animal
  moves, the arena does not), undistorted when the crops are.
- **Appearance**: a colour per mesh vertex, the mean colour the real crops show where the
  fitted mesh's vertex is visible (z-buffer test), over the fitted frames and the views
  whose camera the fit does not name as far off; Lambert shading on top.
- **Poses** (all from the fitted frames given as ``rows``, e.g. the training split only):
  the body pose of one fitted frame plus Gaussian noise of ``pose_spread`` times the
  fitted poses' per-component spread; the orientation of another frame turned about the
  body's own up axis by a heading drawn in ``heading_range_deg``; the root placed where a
  third frame's root was, shifted along the floor by ``shift_std`` body lengths; the
  animal's fitted skeleton and size.
- **Crops**: the preprocess rule (:func:`~smilfit.datasets.ingest_images.crop_box`, the
  crops' margin and size) around the rendered keypoints; rendered at ``supersample``
  times the crop size and reduced (anti-aliased edges, as a resized real crop has).
- **Labels**: 2D keypoints with z-buffer visibility, 3D keypoints and the parameters in
  the fit's form (``global_orient``, ``body_pose``, ``transl``, ``global_log_scale``;
  world frame, the calibration's units), silhouettes.

Everything is deterministic given ``seed``.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from smilfit.body_models.joint_lookup import joint_lookup_dict
from smilfit.body_models.keypoint_naming import lookup_model_names, match_keypoints
from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from smilfit.errors import SmilfitUserError

from ..cameras.projection import project_points_numpy
from ..ops.normals import vertex_normals_np
from ..renderers.zbuffer import rasterize
from .fit_labels import FIT_PARAMS, load_fit_labels
from .hdf5_format import DatasetReader, DatasetWriter, decode_image, encode_image, encode_mask
from .ingest_images import apply_affine, box_affine, crop_box, crop_frame
from .synthetic import build_body_model, keypoint_visibility, up_vector
from .video_io import FrameReader

PathLike = Union[str, Path]

#: Fitted parameters that pose the fitted animal (those the fit has).
POSING_PARAMS = FIT_PARAMS + ('bone_trans', 'betas', 'log_scale')


class RigRenderError(SmilfitUserError, ValueError):
    """The inputs cannot make rendered samples (no crops, no usable fit, no video)."""


@dataclass
class RigRenderOptions:
    """How rendered samples are drawn (see the module docstring).

    Attributes:
        num_samples: rendered samples to write.
        pose_spread: body-pose noise in multiples of the fitted poses' per-component
            standard deviation.
        heading_range_deg: headings drawn uniformly in +- half this range about the
            drawn frame's own (360: any).
        shift_std: floor-plane shift of the root, in body lengths.
        background_frames: frames per video whose median is the background.
        animal_dilate: the animal's pixels left out of the background are its fitted
            mesh's, dilated by this fraction of its projected size (its fur).
        colour_frames: fitted frames whose crops colour the mesh.
        supersample: render at this many times the crop size, then reduce.
        occlusion_tol: keypoint visibility depth tolerance, in body lengths.
        ambient: Lambert shading's ambient share (the rest is diffuse).
        jpeg_quality: JPEG quality of the stored crops.
        seed: random seed.
    """

    num_samples: int = 1000
    pose_spread: float = 0.5
    heading_range_deg: float = 360.0
    shift_std: float = 0.1
    background_frames: int = 60
    animal_dilate: float = 0.1
    colour_frames: int = 48
    supersample: int = 2
    occlusion_tol: float = 0.05
    ambient: float = 0.6
    jpeg_quality: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {'num_samples': self.num_samples >= 1, 'pose_spread': self.pose_spread >= 0,
                  'heading_range_deg': 0 <= self.heading_range_deg <= 360,
                  'shift_std': self.shift_std >= 0,
                  'background_frames': self.background_frames >= 1,
                  'animal_dilate': self.animal_dilate >= 0,
                  'colour_frames': self.colour_frames >= 1,
                  'supersample': self.supersample >= 1,
                  'occlusion_tol': self.occlusion_tol >= 0,
                  'ambient': 0 <= self.ambient <= 1,
                  'jpeg_quality': 1 <= self.jpeg_quality <= 100}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f'rig render options out of range: '
                             f'{ {k: getattr(self, k) for k in bad} }')


# ------------------------------------------------------------------------ the session's look
def source_box(crop: np.ndarray, size: int) -> tuple:
    """The integer source box ``(x0, y0, w, h)`` whose crop to ``size`` px a stored crop's
    affine ``crop`` (3, 3) is (the inverse of :func:`box_affine`)."""
    sx, sy = float(crop[0, 0]), float(crop[1, 1])
    x0 = 0.5 - (float(crop[0, 2]) + 0.5) / sx
    y0 = 0.5 - (float(crop[1, 2]) + 0.5) / sy
    return (int(round(x0)), int(round(y0)), int(round(size / sx)), int(round(size / sy)))


def animal_mask(points: np.ndarray, size: tuple, dilate: float) -> np.ndarray:
    """(H, W) bool: the pixels within ``dilate`` times the points' larger extent of any
    finite point of ``points`` (P, 2) (e.g. the fitted mesh's vertices projected: the
    animal with its fur, which the mesh need not follow); ``size`` is (W, H)."""
    W, H = size
    mask = np.zeros((H, W), np.uint8)
    pts = points[np.isfinite(points).all(-1)]
    if not len(pts):
        return mask.astype(bool)
    pix = np.rint(pts).astype(np.int64)
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H)
    mask[pix[inside, 1], pix[inside, 0]] = 1
    radius = max(1, int(math.ceil(dilate * float((pts.max(0) - pts.min(0)).max()))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # a dilation of the scattered points closes the gaps between them as well
    return cv2.dilate(mask, disk).astype(bool)


def _nan_median(x: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are): ``np.nanmedian``'s result,
    by one sort (NaN sorts last) instead of its masked-array path (50x slower here)."""
    ordered = np.sort(x, axis=0)
    n = np.isfinite(x).sum(0)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], 0)[0]
    hi = np.take_along_axis(ordered, np.minimum(n // 2, len(x) - 1)[None], 0)[0]
    return np.where(n > 0, (lo + hi) / 2.0, np.nan)


def median_backgrounds(video_paths: Sequence[str], frames: np.ndarray,
                       animal: Optional[Sequence[Optional[np.ndarray]]] = None,
                       undistort: Optional[Sequence[Any]] = None, rows_per_block: int = 64
                       ) -> list:
    """Per camera, the (H, W, 3) uint8 RGB median of the video's ``frames`` over the
    pixels the animal does not cover (``None`` where the path is empty).

    An animal that rests for much of a recording leaves itself in a plain median; where
    it is in each frame is left out instead, and pixels it covers in every frame are
    filled from around them (``cv2.inpaint``).

    Args:
        video_paths: one video per camera (C).
        frames: (F,) frame indices.
        animal: optional, per camera, (F, H, W) bool: where the animal is in each frame
            (:func:`animal_mask`).
        undistort: per camera ``(K, dist)`` to undistort the median with, or None.

    Raises:
        RigRenderError: a video cannot be opened or decoded.
    """
    out = []
    for c, path in enumerate(video_paths):
        if not path:
            out.append(None)
            continue
        if not Path(path).is_file():
            raise RigRenderError(f'video {path} does not exist: the background is the '
                                 'median of its frames')
        reader = FrameReader(path)
        try:
            stack = np.stack([reader.read_rgb(int(i)) for i in frames])   # (F, H, W, 3)
        except OSError as err:
            raise RigRenderError(str(err)) from err
        finally:
            reader.close()
        F, H, W = stack.shape[:3]
        covered = animal[c] if animal is not None and animal[c] is not None else \
            np.zeros((F, H, W), bool)
        median = np.empty((H, W, 3), np.uint8)
        for r in range(0, H, rows_per_block):
            block = stack[:, r:r + rows_per_block].astype(np.float32)
            block[covered[:, r:r + rows_per_block]] = np.nan
            median[r:r + rows_per_block] = np.rint(np.nan_to_num(_nan_median(block)))
        always = covered.all(0)
        if always.any():   # under the animal in every frame: filled from around it
            median = cv2.inpaint(median, always.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        if undistort is not None and undistort[c] is not None:
            K, dist = undistort[c]
            median = cv2.undistort(median, np.asarray(K), np.asarray(dist))
        out.append(median)
    return out


def foreground(image: np.ndarray, background: np.ndarray, min_contrast: float = 12.0
               ) -> np.ndarray:
    """(H, W) bool: pixels of ``image`` that differ from ``background`` (both (H, W, 3))
    by more than three times the crop's median difference (its noise: most of a crop is
    background) and at least ``min_contrast`` grey levels."""
    diff = np.abs(image.astype(np.float32) - background.astype(np.float32)).max(-1)
    return diff > max(3.0 * float(np.median(diff)), float(min_contrast))


def vertex_colours(vertices: np.ndarray, faces: np.ndarray, images: Sequence[np.ndarray],
                   cameras: Sequence[Dict[str, np.ndarray]], tol: float,
                   backgrounds: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """(V, 3) float64 mean RGB of each vertex where the images see it on the animal.

    Args:
        vertices: (S, V, 3) the fitted mesh of each sample (world).
        faces: (F, 3).
        images: per (sample, view) pair, an (H, W, 3) uint8 RGB image.
        cameras: per pair, ``{'sample': s, 'K', 'R', 't', 'dist'}`` of that image.
        tol: depth tolerance of the visibility test (world units).
        backgrounds: per pair, the (H, W, 3) background of the image: a vertex that
            lands on a background pixel (:func:`foreground`) is not coloured by it (a
            fitted mesh follows the keypoints, not the fur's outline).

    Vertices no image sees get the mean colour of those seen (grey if none is).
    """
    V = vertices.shape[1]
    total, count = np.zeros((V, 3)), np.zeros(V)
    for p, (image, cam) in enumerate(zip(images, cameras)):
        verts = vertices[cam['sample']]
        H, W = image.shape[:2]
        raster = rasterize(verts, faces, cam['K'], cam['R'], cam['t'], cam['dist'],
                           height=H, width=W)
        uv, depth = project_points_numpy(verts, cam['K'], cam['R'], cam['t'], cam['dist'])
        seen = keypoint_visibility(uv, depth, raster.depth.numpy(), tol)
        col = np.rint(uv[:, 0]).astype(np.int64).clip(0, W - 1)
        row = np.rint(uv[:, 1]).astype(np.int64).clip(0, H - 1)
        if backgrounds is not None:
            seen &= foreground(image, backgrounds[p])[row, col]
        total[seen] += image[row[seen], col[seen]]
        count[seen] += 1
    colours = np.full((V, 3), 128.0)
    have = count > 0
    if have.any():
        colours[have] = total[have] / count[have, None]
        colours[~have] = colours[have].mean(0)
    return colours


def shade(raster, faces: np.ndarray, colours: np.ndarray, normals_cam: np.ndarray,
          ambient: float) -> np.ndarray:
    """(H, W, 3) float64 RGB of a rasterised mesh with per-vertex ``colours`` (V, 3) under
    a headlight: ``colour * (ambient + (1 - ambient) * |n . z|) / mean factor``, so the
    mean brightness stays the observed colour's (zeros off the mesh)."""
    face_index = raster.face_index.numpy()
    H, W = face_index.shape
    out = np.zeros((H, W, 3))
    mask = face_index >= 0
    if mask.any():
        fi = faces[face_index[mask]]
        bary = raster.bary.numpy()[mask]
        colour = np.einsum('pk,pkc->pc', bary, colours[fi])
        n = np.einsum('pk,pkc->pc', bary, normals_cam[fi])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        light = ambient + (1.0 - ambient) * np.abs(n[:, 2])
        out[mask] = colour * (light / max(float(light.mean()), 1e-6))[:, None]
    return out


# ----------------------------------------------------------------------------- the poses
def _matrices(axis_angle: np.ndarray) -> np.ndarray:
    """(S, 3, 3) float64 rotation matrices of (S, 3) axis-angle vectors."""
    return axis_angle_to_matrix(torch.as_tensor(axis_angle, dtype=torch.float64)).numpy()


def draw_poses(rng: np.random.Generator, fitted: Dict[str, np.ndarray], up_axis: np.ndarray,
               roots: np.ndarray, body_length: float, num: int,
               options: RigRenderOptions) -> Dict[str, np.ndarray]:
    """``num`` parameter sets around the fitted frames (see the module docstring).

    Args:
        fitted: name -> (F, ...) the fitted parameters of the frames drawn from
            (``global_orient`` axis-angle (F, 3), ``body_pose`` (F, J-1, 3), ...).
        up_axis: (3,) the model's up axis in its rest frame.
        roots: (F, 3) the fitted root positions (world).
        body_length: the fitted animal's length (world units).

    Returns:
        name -> (num, ...) parameters with ``global_orient`` as (num, 3, 3) matrices and no
        ``transl`` (the caller places the root at ``'root'``, (num, 3)).
    """
    F = len(roots)
    pick_pose, pick_orient, pick_place = (rng.integers(0, F, num) for _ in range(3))
    pose = fitted['body_pose']
    spread = pose.std(axis=0) if F > 1 else np.zeros_like(pose[0])
    body_pose = pose[pick_pose] + options.pose_spread * spread[None] * \
        rng.standard_normal((num,) + pose.shape[1:])
    orient = _matrices(fitted['global_orient'][pick_orient])
    body_up = orient @ up_axis                                         # (num, 3)
    half = math.radians(options.heading_range_deg) / 2.0
    turn = _matrices(body_up * rng.uniform(-half, half, num)[:, None])
    shift = options.shift_std * body_length * rng.standard_normal((num, 3))
    shift -= np.einsum('nc,nc->n', shift, body_up)[:, None] * body_up   # along the floor
    out = {k: v[pick_pose].copy() for k, v in fitted.items()
           if k not in ('global_orient', 'body_pose', 'transl')}
    out.update(global_orient=turn @ orient, body_pose=body_pose,
               root=roots[pick_place] + shift)
    return out


# ------------------------------------------------------------------------------ the file
@dataclass
class _Camera:
    name: str
    K: np.ndarray           # (3, 3) full-frame intrinsics of the stored convention
    dist: np.ndarray        # (5,) stored distortion (zeros where undistorted)
    R: np.ndarray
    t: np.ndarray
    size: tuple             # (W, H) full frame
    background: np.ndarray  # (H, W, 3) uint8 RGB


def _session_cameras(reader: DatasetReader, rows: np.ndarray, session: int,
                     vertices: np.ndarray, options: RigRenderOptions) -> list:
    """The session's calibrated cameras at full frame, with their backgrounds (None for
    a view slot without a camera): the median of up to ``background_frames`` of the
    ``rows``' frames, each without the animal (its fitted mesh ``vertices`` (R, V, 3),
    one per row, projected and dilated)."""
    info = reader.read(rows[:1], keys=['K', 'R', 't', 'dist', 'crop', 'calibrated'])
    pick = np.unique(np.linspace(0, len(rows) - 1, min(options.background_frames,
                                                       len(rows))).round().astype(int))
    frames = reader.read(rows[pick], keys=['frame'])['frame']
    f = reader.h5
    table = f['sessions']
    if 'video_paths' not in table or 'video_shape' not in table:
        raise RigRenderError(f'{reader.path} names no videos: prepare the session from '
                             'its videos (tools/preprocess_sleap.py) to render over them')
    paths = [str(p) for p in table['video_paths'].asstr()[session]]
    shapes = table['video_shape'][session]
    video_dist = table['video_dist'][session] if 'video_dist' in table else None
    undistorted = bool(f.attrs.get('undistorted', False))
    names = reader.camera_names[session]
    C = info['K'].shape[1]
    full_K = [np.linalg.solve(info['crop'][0, c], info['K'][0, c]) for c in range(C)]
    undistort = [(full_K[c], video_dist[c]) if undistorted and video_dist is not None
                 else None for c in range(C)]
    usable = [bool(info['calibrated'][0, c]) and bool(paths[c]) if c < len(paths) else False
              for c in range(C)]
    sizes = [(int(shapes[c][2]), int(shapes[c][1])) if c < len(shapes) else (0, 0)
             for c in range(C)]
    animal = []
    for c in range(C):
        if not usable[c]:
            animal.append(None)
            continue
        uv, depth = project_points_numpy(vertices[pick], full_K[c], info['R'][0, c],
                                         info['t'][0, c], info['dist'][0, c])
        uv = np.where((depth > 0)[..., None], uv, np.nan)
        animal.append(np.stack([animal_mask(p, sizes[c], options.animal_dilate)
                                for p in uv]))
    backgrounds = median_backgrounds([p if ok else '' for p, ok in zip(paths, usable)],
                                     frames, animal, undistort)
    cams = []
    for c in range(C):
        if not usable[c]:
            cams.append(None)
            continue
        cams.append(_Camera(name=str(names[c]), K=full_K[c], dist=info['dist'][0, c],
                            R=info['R'][0, c], t=info['t'][0, c], size=sizes[c],
                            background=backgrounds[c]))
    return cams


def _crop_settings(reader: DatasetReader) -> tuple:
    """(crop size, bbox margin) of a ``bbox_crop`` dataset."""
    crops = reader.input_crops
    if crops is None or crops['crop_mode'] != 'bbox_crop' or not crops['target_size']:
        raise RigRenderError(f'{reader.path} is not a bbox_crop dataset with a fixed crop size '
                             '(tools/preprocess_sleap.py --crop-mode bbox_crop --target-size '
                             'N): rendered samples copy its crop rule')
    return crops['target_size'], crops['bbox_margin']


def _pose_batch(model, params: Dict[str, np.ndarray]):
    with torch.no_grad():
        return model(**{k: torch.as_tensor(v) for k, v in params.items()})


def generate_rig_renders(out_path: PathLike, *, dataset: PathLike, fit_results: PathLike,
                         body_model: Any, joint_lookup: Any = None,
                         rows: Optional[Sequence[int]] = None,
                         options: Optional[RigRenderOptions] = None,
                         overwrite: bool = False, progress: bool = True,
                         workers: int = 1) -> Path:
    """Write ``options.num_samples`` rendered samples of the fitted animal (see the module
    docstring) in the layout of ``dataset``.

    Args:
        out_path: the ``.h5`` to write.
        dataset: the prepared session with crops (one session).
        fit_results: a ``tools/fit.py`` ``fit_results.h5`` of that session.
        body_model: the fit's body model (a ``BODY_MODELS`` config dict, instance or
            file).
        joint_lookup: model keypoint name -> data keypoint name (dict or CSV path), as
            the fit and the network use it.
        rows: dataset rows whose fits the poses are drawn from and whose crops colour the
            mesh (default: every row with a usable fit); pass the training split's rows
            so nothing of the held-out frames reaches the renders.
        workers: samples rendered at once, in threads (each with one torch thread while
            rendering; the file is the same for any number).

    Returns:
        The path written.

    Raises:
        RigRenderError: the dataset is not a bbox-crop session with videos, or no row has
            a usable fit.
    """
    from tqdm import tqdm
    options = options or RigRenderOptions()
    rng = np.random.default_rng(options.seed)
    model = build_body_model(body_model)
    faces = model.faces.numpy()
    with DatasetReader(dataset) as reader:
        size, margin = _crop_settings(reader)
        labels = load_fit_labels(fit_results, reader, param_names=POSING_PARAMS)
        chosen = np.arange(len(reader)) if rows is None else np.asarray(rows, np.int64)
        chosen = chosen[labels.usable[chosen]]
        if not len(chosen):
            raise RigRenderError(f'no row of {dataset} given has a usable fit in '
                                 f'{fit_results}')
        sessions = np.unique(reader.read(chosen, keys=['session'])['session'])
        if len(sessions) != 1:
            raise RigRenderError(f'rows of {len(sessions)} sessions given: render one '
                                 'recording at a time (its cameras and background)')
        session = int(sessions[0])
        names = list(reader.keypoint_names)
        match = match_keypoints(list(model.keypoint_names), names,
                                joint_lookup_dict(joint_lookup),
                                lookup_names=lookup_model_names(model))
        fitted = {k: v[chosen] for k, v in labels.params.items()}
        bad_views = labels.bad_views[chosen]
        # --- the fitted animal: its roots, length and look
        out = _pose_batch(model, fitted)
        verts = out.vertices.numpy()
        cameras = _session_cameras(reader, chosen, session, verts, options)
        roots = out.joints_kin[:, model.levels.root].numpy()
        extent = verts.max(1) - verts.min(1)
        body_length = float(np.median(extent.max(-1)))
        tol = options.occlusion_tol * body_length
        pick = np.unique(np.linspace(0, len(chosen) - 1, min(options.colour_frames,
                                                               len(chosen))).round()
                         .astype(np.int64))
        data = reader.read(chosen[pick], keys=['images', 'K', 'R', 't', 'dist', 'valid',
                                               'crop'])
        images, cams, backs = [], [], []
        for i, s in enumerate(pick):
            for c, cam in enumerate(cameras):
                if cam is None or not data['valid'][i, c] or bad_views[s, c]:
                    continue
                images.append(decode_image(data['images'][i][c]))
                backs.append(crop_frame(cam.background, source_box(data['crop'][i, c], size),
                                        (size, size)))
                cams.append(dict(sample=int(s), K=data['K'][i, c], R=data['R'][i, c],
                                 t=data['t'][i, c], dist=data['dist'][i, c]))
        colours = vertex_colours(verts, faces, images, cams, tol, backs)
        units = reader.units
        camera_names = list(reader.camera_names[session])
        session_name = f'{reader.session_names[session]}_rendered'
    up = up_vector(model.data.up_axis)
    C = len(cameras)
    attrs = {'generator': 'smilfit.datasets.rig_renders', 'options': json.dumps(asdict(options)),
             'rendered_from': json.dumps({'dataset': str(dataset),
                                          'fit_results': str(fit_results),
                                          'rows': [int(r) for r in chosen]}),
             'crop_mode': 'bbox_crop',
             'ingest_options': json.dumps({'crop_mode': 'bbox_crop', 'target_size': size,
                                           'bbox_margin': margin})}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=options.num_samples, desc='rig renders', unit='sample',
               disable=not progress)
    batch = 32
    with DatasetWriter(str(out_path), keypoint_names=names, num_views=C,
                       overwrite=overwrite, source='rig renders', units=units,
                       attrs=attrs, created_by='smilfit.datasets.rig_renders') as writer:
        sid = writer.add_session(session_name, camera_names)
        for start in range(0, options.num_samples, batch):
            n = min(batch, options.num_samples - start)
            drawn = draw_poses(rng, fitted, up, roots, body_length, n, options)
            samples = _render_batch(model, faces, colours, drawn, cameras, match,
                                    len(names), size, margin, tol, options, workers)
            samples['session'] = np.full(n, sid, np.int64)
            samples['frame'] = np.arange(start, start + n, dtype=np.int64)
            writer.add_samples(samples)
            bar.update(n)
        writer.commit()
    bar.close()
    return out_path


def _render_batch(model, faces, colours, drawn, cameras, match, N, size, margin, tol,
                  options, workers: int = 1) -> Dict[str, Any]:
    """Pose ``drawn`` (place each root), render every camera's crop, ``workers`` samples
    at once; writer samples."""
    root_at = drawn.pop('root')
    orient = drawn['global_orient']
    zero = _pose_batch(model, drawn)
    transl = root_at - zero.joints_kin[:, model.levels.root].numpy()
    verts = zero.vertices.numpy() + transl[:, None]
    model_kp = zero.keypoints.numpy() + transl[:, None]
    n, C = len(verts), len(cameras)
    kp3d = np.full((n, N, 3), np.nan)
    kp3d[:, np.asarray(match.data_index)] = model_kp[:, np.asarray(match.model_index)]
    s = int(options.supersample)
    up = np.array([[s, 0, (s - 1) / 2.0], [0, s, (s - 1) / 2.0], [0, 0, 1.0]])
    out = {k: np.zeros(shape, dtype) for k, shape, dtype in (
        ('valid', (n, C), bool), ('keypoints_2d', (n, C, N, 2), np.float32),
        ('confidence', (n, C, N), np.float32), ('visible', (n, C, N), bool),
        ('K', (n, C, 3, 3), np.float64), ('dist', (n, C, 5), np.float64),
        ('R', (n, C, 3, 3), np.float64), ('t', (n, C, 3), np.float64),
        ('image_size', (n, C, 2), np.int64), ('crop', (n, C, 3, 3), np.float64),
        ('calibrated', (n, C), bool))}
    out['keypoints_2d'][:] = np.nan
    out['K'][:] = out['R'][:] = out['crop'][:] = np.eye(3)
    images = [[b''] * C for _ in range(n)]
    masks = [[b''] * C for _ in range(n)]

    def render_sample(i: int) -> None:   # (writes sample i's slots only)
        normals = vertex_normals_np(verts[i], faces)
        for c, cam in enumerate(cameras):
            if cam is None:
                continue
            uv, depth = project_points_numpy(kp3d[i], cam.K, cam.R, cam.t, cam.dist)
            W, H = cam.size
            inside = np.isfinite(uv).all(-1) & (depth > 0) & (uv[:, 0] >= 0) & \
                (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
            if inside.sum() < 2:
                continue
            box = crop_box('bbox_crop', (W, H), np.where(inside[:, None], uv, np.nan), margin)
            A = box_affine(box, (size, size))
            K_crop = A @ cam.K
            raster = rasterize(verts[i], faces, up @ K_crop, cam.R, cam.t, cam.dist,
                               height=s * size, width=s * size)
            colour = shade(raster, faces, colours, normals @ cam.R.T, options.ambient)
            alpha = raster.mask.numpy().astype(np.float64)
            if s > 1:
                colour = cv2.resize(colour * alpha[..., None], (size, size),
                                    interpolation=cv2.INTER_AREA)
                alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
                colour = colour / np.maximum(alpha, 1e-6)[..., None]
            background = crop_frame(cam.background, box, (size, size)).astype(np.float64)
            image = alpha[..., None] * colour + (1.0 - alpha[..., None]) * background
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
            uv_ss = apply_affine(up @ A, uv)
            visible = keypoint_visibility(uv_ss, depth, raster.depth.numpy(), tol) & inside
            out['keypoints_2d'][i, c] = apply_affine(A, uv)
            out['visible'][i, c] = visible
            out['confidence'][i, c] = visible
            out['valid'][i, c] = visible.any()
            out['calibrated'][i, c] = True
            out['K'][i, c], out['dist'][i, c] = K_crop, cam.dist
            out['R'][i, c], out['t'][i, c], out['crop'][i, c] = cam.R, cam.t, A
            out['image_size'][i, c] = (size, size)
            images[i][c] = encode_image(image, int(options.jpeg_quality))
            masks[i][c] = encode_mask(alpha >= 0.5)
    # (the rasteriser, OpenCV and numpy release the GIL; one torch thread per sample)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if workers > 1 else threads)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(render_sample, range(n)))
    finally:
        torch.set_num_threads(threads)
    out['images'], out['masks'] = images, masks
    out['keypoints_3d'] = kp3d.astype(np.float32)
    params = {'global_orient': matrix_to_axis_angle(torch.as_tensor(orient)).numpy(),
              'body_pose': drawn['body_pose'], 'transl': transl}
    if 'global_log_scale' in drawn:
        params['global_log_scale'] = drawn['global_log_scale']
    out['params'] = {k: np.asarray(v, np.float32) for k, v in params.items()}
    return out


__all__ = ['RigRenderOptions', 'RigRenderError', 'generate_rig_renders', 'median_backgrounds',
           'vertex_colours', 'draw_poses', 'shade', 'POSING_PARAMS']
