"""Keypoint-only synthetic sessions of several animals with their own skeletons.

What the per-animal skeleton estimate (:mod:`smilfit.apis.animals`) is checked against:
one session, a ring of calibrated cameras, ``num_animals`` animals (SLEAP-style tracks
``animal_0``, ``animal_1``, ...) whose bone translations differ (``bone_std`` body lengths
per joint, only where a keypoint follows the joint), posed at random in every frame.
No images are rendered, so long sessions (tens of thousands of frames) are quick to make.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from smilfit.cameras import project_points
from smilfit.body_models.keypoint_naming import rotate_offsets, source_carriers
from smilfit.body_models.markers import surface_definitions, surface_places
from smilfit.body_models.point_edges import model_point_edges

from .hdf5_format import DatasetWriter
from .synthetic import build_body_model, ring_cameras, up_vector
from .slp_export import SlpPredictionWriter


def rest_keypoints(model, bone_trans: torch.Tensor) -> torch.Tensor:
    """(Kp, 3) rest-pose keypoints with ``bone_trans`` (J, 3), relative to the root."""
    out = model(bone_trans=bone_trans.to(model.dtype)[None], return_vertices=False)
    return out.keypoints[0] - out.joints_kin[0, :1]


def observable_bones(model) -> np.ndarray:
    """(J,) bool: joints whose bone translation moves a keypoint (never the root's, which
    is the body's translation)."""
    J = model.num_joints
    jac = torch.autograd.functional.jacobian(
        lambda b: rest_keypoints(model, b), torch.zeros(J, 3, dtype=model.dtype))
    mask = (jac.abs().sum((0, 1, 3)) > 0).numpy()
    mask[int(model.levels.root)] = False
    return mask


def bone_lengths(model, **params) -> torch.Tensor:
    """(J - 1,) rest-pose distance of every joint to its parent for one animal's
    ``params`` (e.g. ``bone_trans`` (J, 3) or ``betas`` (K,), arrays or tensors): what
    keypoints seen in many poses determine (a bone's direction trades off against its
    parent's rotation, frame by frame)."""
    with torch.no_grad():
        joints = model(**{k: torch.as_tensor(v, dtype=model.dtype)[None]
                          for k, v in params.items()}, return_vertices=False).joints_kin[0]
    parents = torch.as_tensor(model.parents)[1:].long()
    return (joints[1:] - joints[parents]).norm(dim=-1)


def body_length(model) -> float:
    """The rest pose's largest extent over its keypoints (model units): the unit of
    ``bone_std``, ``offset_std`` and :func:`displaced_label`."""
    with torch.no_grad():
        rest = rest_keypoints(model, torch.zeros(model.num_joints, 3, dtype=model.dtype))
    return float((rest.amax(0) - rest.amin(0)).max())


def displaced_label(model, keypoint: str, body_lengths: float, num_animals: int = 1,
                    seed: int = 0) -> np.ndarray:
    """(num_animals, Kp, 3) ``keypoint_offsets`` for :func:`generate_animal_session` that
    place one label ``body_lengths`` from its joint (in the joint's frame, a direction
    drawn with ``seed``): a user's joint lookup mapping it to the wrong joint."""
    names = list(model.keypoint_names)
    if keypoint not in names:
        raise ValueError(f'keypoint {keypoint!r} is not one of the model\'s {names}')
    direction = np.random.default_rng(seed).standard_normal(3)
    out = np.zeros((num_animals, len(names), 3))
    out[:, names.index(keypoint)] = (body_lengths * body_length(model) * direction
                                     / np.linalg.norm(direction))
    return out


#: The labels :func:`skin_labels` puts on the skin: the back above the spine, the
#: flanks beside the shoulders, hips, elbows and knees.
SKIN_LABELS = ('spine_1', 'spine_2', 'spine_3', 'shoulder_L', 'shoulder_R', 'hip_L',
               'hip_R', 'elbow_L', 'elbow_R', 'knee_L', 'knee_R')


def skin_labels(model, names: Sequence[str] = SKIN_LABELS, leave_out: Sequence[str] = ()
                ) -> Dict[str, Dict[str, Any]]:
    """Keypoint definitions for :func:`generate_animal_session` that put the labels
    ``names`` on the skin near their joints, as a person labels a back or a shoulder: a
    joint of the trunk (within 2 % of the body length of the midline) gets the skin point
    nearest to 10 % of the body length above it, any other joint the one nearest to 10 %
    beside it (away from the midline). Skinned with the surface, each such label moves
    with every joint that bends the skin under it.

    Args:
        model: the body model (its keypoints are the labels; each of ``names`` must be
            a joint keypoint).
        names: the labels put on the skin.
        leave_out: keypoints not labelled at all (e.g. a trunk label's neighbours, so
            that a joint lookup can name them instead).
    """
    from .synthetic import up_vector
    defs = dict(model.keypoint_definitions)
    unknown = [n for n in list(names) + list(leave_out) if n not in defs]
    if unknown:
        raise ValueError(f'skin_labels: {unknown} are not keypoints of the model '
                         f'({list(defs)})')
    with torch.no_grad():
        rest = model(return_vertices=True)
    joints = rest.joints_kin[0].double()
    up = torch.as_tensor(up_vector(model.data.up_axis), dtype=torch.float64)
    root = joints[int(model.levels.root)]
    spread = joints - root
    # the body's long axis: the joints' main direction across the up axis
    flat = spread - (spread @ up)[:, None] * up
    forward = torch.linalg.svd(flat, full_matrices=False).Vh[0]
    side = torch.linalg.cross(up, forward)
    length = float((joints.amax(0) - joints.amin(0)).max())
    targets = []
    for name in names:
        spec = defs[name]
        if 'joint' not in spec:
            raise ValueError(f'skin_labels: {name!r} is not a joint keypoint ({spec})')
        p = joints[model.joint_index(spec['joint'])]
        lateral = float((p - root) @ side)
        midline = abs(lateral) < 0.02 * length
        direction = up if midline else side * (1.0 if lateral > 0 else -1.0)
        targets.append(p + 0.1 * length * direction)
    targets = torch.stack(targets)[None].to(rest.vertices)
    corners, weights, _ = surface_places(targets, rest.vertices, model.faces)
    out = surface_definitions(defs, list(names), corners, weights)
    return {k: v for k, v in out.items() if k not in set(leave_out)}


class _VideoMotion:
    """Each animal's pose, heading and place from frame to frame (see
    :func:`generate_animal_session`, ``pose_correlation``)."""

    def __init__(self, rng, animals: int, joints: int, pose_std: float, rho: float,
                 length: float) -> None:
        self.rng, self.rho = rng, rho
        self.step = math.sqrt(1.0 - rho * rho)
        self.pose_std, self.place_std = pose_std, 0.1 * length
        self.pose = pose_std * rng.standard_normal((animals, joints - 1, 3))
        self.heading = rng.uniform(-math.pi, math.pi, animals)
        self.place = self.place_std * rng.standard_normal((animals, 3))

    def next(self, frames: int):
        """``frames`` frames of every animal, frame-major: headings (F A,), poses
        (F A, J - 1, 3) and places (F A, 3)."""
        heading, pose, place = [], [], []
        for _ in range(frames):     # (a recursion in time: one step per frame)
            self.pose = self.rho * self.pose + self.step * self.pose_std * \
                self.rng.standard_normal(self.pose.shape)
            self.heading = self.heading + self.step * self.pose_std * \
                self.rng.standard_normal(self.heading.shape)
            self.place = self.rho * self.place + self.step * self.place_std * \
                self.rng.standard_normal(self.place.shape)
            heading.append(self.heading)
            pose.append(self.pose)
            place.append(self.place)
        return (np.concatenate(heading), np.concatenate(pose), np.concatenate(place))


def generate_animal_session(out_path: Union[str, Path], *, body_model: Any = None,
                            num_animals: int = 2, frames: int = 10, num_views: int = 4,
                            bone_std: float = 0.05, pose_std: float = 0.2,
                            image_size: int = 512, focal: float = 600.0, seed: int = 0,
                            chunk: int = 4096, noise_px: float = 0.0,
                            offset_std: float = 0.0, betas: Any = None,
                            keypoint_offsets: Any = None,
                            slp_path: Union[None, str, Path] = None,
                            slp_identity: str = 'groups',
                            return_keypoints_3d: bool = False,
                            pose_correlation: float = 0.0,
                            missing_frames: float = 0.0,
                            keypoint_definitions: Optional[Mapping[str, Any]] = None
                            ) -> Dict[str, Any]:
    """Write the session (``out_path``, smilfit HDF5) and return its ground truth.

    Samples are frame-major (frame 0's animals, then frame 1's, ...), so every batch of a
    dataset fit mixes the animals.

    Args:
        body_model: as :func:`~smilfit.datasets.synthetic.build_body_model` (None: the
            demo mouse).
        num_animals, frames, num_views: the session's size.
        bone_std: std of each observable bone translation, in body lengths (animal 0
            keeps the model's own skeleton).
        pose_std: std of the joint rotations (radians); headings are uniform.
        image_size, focal: square images and focal length (pixels).
        chunk: samples posed and written at a time (bounded memory).
        noise_px: std of Gaussian label noise added to every 2D keypoint (pixels).
        offset_std: std of each animal's keypoint offsets (labels that are not joints:
            each keypoint moved in the frame of the joint carrying it), in body lengths.
        betas: (num_animals, num_betas) each animal's shape coefficients (None: the
            model's mean shape for every animal).
        keypoint_offsets: (num_animals, Kp, 3) offsets (model units, joint frames) added to
            those drawn with ``offset_std``: e.g. one label placed far from its joint.
        slp_path: also write the session as SLEAP labels (what a user brings): one
            video per camera (``cam_<c>.mp4``, not on disk), a ``RecordingSession`` with
            the calibration, each animal on its track and joined across the cameras in
            an ``InstanceGroup`` per frame. ``tools/preprocess_sleap.py`` reads it back.
        slp_identity: what tells the animals apart in those labels: ``'groups'``
            (tracks and instance groups), ``'tracks'`` (tracks only: views matched by
            track name) or ``'none'`` (neither: what ingestion must refuse for several
            animals).
        return_keypoints_3d: also return every sample's true 3D keypoints. They are not
            written to the session: a fit would start from them (as from a recording's
            triangulated points) and a held-out evaluation would score its own start.
        pose_correlation: 0 poses every frame anew; ``rho`` in (0, 1) makes each animal's
            frames a video: its joint rotations an AR(1) process ``x_t = rho x_{t-1} +
            sqrt(1 - rho^2) pose_std e_t`` (spread ``pose_std`` as before, a step of about
            ``pose_std sqrt(2 (1 - rho))`` a frame), its heading a random walk with the
            same steps and its place an AR(1) wander of 0.1 body lengths.
        missing_frames: the chance that an animal's frame is not in the session (a track
            lost for a frame: a gap in its video); the truth (``keypoints_3d``) has the
            samples written only.
        keypoint_definitions: the labels, as the body model's keypoint definitions
            (:meth:`~smilfit.body_models.SMILModel.set_keypoints`; e.g. labels on the
            skin, :func:`skin_labels`); their names are the session's keypoints.
            Default: the model's own keypoints.

    The session's skeleton (``skeleton/edges``) is the body model's kinematic tree
    between its keypoints, as a SLEAP skeleton would link them.

    Returns:
        ``bone_trans`` (A, J, 3), ``keypoint_offsets`` (A, Kp, 3) (joint frames, model
        units), ``betas`` (A, num_betas), ``length`` (the rest pose's largest extent, model
        units), ``model`` (the body model, float64), ``path`` and, with
        ``return_keypoints_3d``, ``keypoints_3d`` (N, Kp, 3) world units.
    """
    if slp_identity not in ('groups', 'tracks', 'none'):
        raise ValueError(f"slp_identity must be 'groups', 'tracks' or 'none', got "
                         f'{slp_identity!r}')
    if not 0.0 <= pose_correlation < 1.0 or not 0.0 <= missing_frames < 1.0:
        raise ValueError(f'pose_correlation and missing_frames must be in [0, 1), got '
                         f'{pose_correlation} and {missing_frames}')
    if missing_frames and slp_path is not None:
        raise ValueError('missing_frames: not with slp_path (SLEAP labels of every frame)')
    if (min(num_animals, frames, num_views) < 1 or bone_std < 0 or not noise_px >= 0
            or not offset_std >= 0):
        raise ValueError(f'num_animals, frames and num_views must be >= 1, bone_std, '
                         f'noise_px and offset_std >= 0, got {num_animals}, {frames}, '
                         f'{num_views}, {bone_std}, {noise_px}, {offset_std}')
    model = build_body_model(body_model).double()
    if keypoint_definitions is not None:
        model.set_keypoints(dict(keypoint_definitions))
    J = model.num_joints
    rng = np.random.default_rng(seed)
    length = body_length(model)
    observable = observable_bones(model)
    bones = bone_std * length * rng.standard_normal((num_animals, J, 3))
    bones[0] = 0.0
    bones[:, ~observable] = 0.0
    Kp = len(model.keypoint_names)
    offsets_kp = np.zeros((num_animals, Kp, 3))
    if offset_std:        # drawn only when asked: the other draws stay as they were
        offsets_kp = offset_std * length * rng.standard_normal((num_animals, Kp, 3))
    if keypoint_offsets is not None:
        extra = np.asarray(keypoint_offsets, np.float64)
        if extra.shape != offsets_kp.shape or not np.isfinite(extra).all():
            raise ValueError(f'keypoint_offsets must be finite, (num_animals, keypoints, 3) = '
                             f'{offsets_kp.shape}, got {extra.shape}')
        offsets_kp = offsets_kp + extra
    shapes = np.zeros((num_animals, model.num_betas))
    if betas is not None:
        shapes = np.asarray(betas, np.float64)
        if shapes.shape != (num_animals, model.num_betas) or not np.isfinite(shapes).all():
            raise ValueError(f'betas must be finite, (num_animals, num_betas) = '
                             f'{(num_animals, model.num_betas)}, got {shapes.shape}')
    carriers = source_carriers(model, 'keypoints')
    up = up_vector(model.data.up_axis)
    side = np.cross(up, np.eye(3)[int(np.argmin(np.abs(up)))])
    side /= np.linalg.norm(side)
    C = int(num_views)
    if slp_path is not None or pose_correlation:
        chunk = max(num_animals, chunk - chunk % num_animals)  # whole frames per chunk
    walk = _VideoMotion(rng, num_animals, J, pose_std, pose_correlation, length) \
        if pose_correlation else None
    cams = ring_cameras(C, target=np.zeros(3), up=up, distance=2.5 * length * max(1, num_animals),
                        elevations_deg=[35.0 if c % 2 == 0 else 20.0 for c in range(C)],
                        azimuths_deg=[360.0 * c / C for c in range(C)], focal=focal,
                        image_size=(image_size, image_size))
    N = frames * num_animals
    offsets = (np.arange(num_animals) - (num_animals - 1) / 2) * length
    slp = None
    if slp_path is not None:
        slp = SlpPredictionWriter(
            list(model.keypoint_names),
            [dict(filename=f'cam_{c}.mp4', shape=(frames, image_size, image_size, 3))
             for c in range(C)],
            tracks=[f'animal_{a}' for a in range(num_animals)],
            sessions=[dict(videos=list(range(C)), cameras=[
                dict(name=f'cam_{c}', K=cams['K'][c], dist=cams['dist'][c], R=cams['R'][c],
                     t=cams['t'][c], size=tuple(cams['image_size'][c])) for c in range(C)])])
    truth = []
    with DatasetWriter(str(out_path), keypoint_names=list(model.keypoint_names),
                       num_views=C, units=model.data.units, source='synthetic-animals') as w:
        w.add_session('animals', [f'cam_{c}' for c in range(C)])
        w.set_skeleton(edges=model_point_edges(model, 'keypoints', range(Kp), range(Kp), Kp))
        for start in range(0, N, chunk):
            idx = np.arange(start, min(N, start + chunk))
            animal, frame = idx % num_animals, idx // num_animals
            B = idx.size
            if walk is None:
                heading = rng.uniform(-math.pi, math.pi, B)
                pose = pose_std * rng.standard_normal((B, J - 1, 3))
                place = np.zeros((B, 3))
            else:
                heading, pose, place = walk.next(B // num_animals)
            with torch.no_grad():
                out = model(global_orient=torch.as_tensor(heading[:, None] * up[None]),
                            body_pose=torch.as_tensor(pose),
                            bone_trans=torch.as_tensor(bones[animal]),
                            betas=torch.as_tensor(shapes[animal]),
                            transl=torch.as_tensor(offsets[animal][:, None] * side[None]
                                                   + place),
                            return_vertices=False)
            kp = out.keypoints + rotate_offsets(torch.as_tensor(offsets_kp[animal]),
                                                out.joint_transforms, carriers)
            if return_keypoints_3d:
                truth.append(kp.numpy())
            cam = {k: torch.as_tensor(v)[None].expand(B, *v.shape) for k, v in cams.items()}
            uv = project_points(kp[:, None].expand(B, C, *kp.shape[1:]), cam['K'], cam['R'],
                                cam['t'], None).numpy()
            if noise_px:
                uv = uv + noise_px * rng.standard_normal(uv.shape)
            kept = (rng.uniform(size=B) >= missing_frames if missing_frames
                    else np.ones(B, bool))
            if return_keypoints_3d and missing_frames:
                truth[-1] = truth[-1][kept]
            w.add_samples(dict(
                session=np.zeros(int(kept.sum()), int), frame=frame[kept],
                instance=animal[kept],
                track=np.array([f'animal_{a}' for a in animal[kept]], dtype=object),
                valid=np.ones((int(kept.sum()), C), bool),
                keypoints_2d=uv[kept].astype(np.float32),
                confidence=np.ones(uv[kept].shape[:3], np.float32), K=cam['K'].numpy()[kept],
                R=cam['R'].numpy()[kept], t=cam['t'].numpy()[kept],
                image_size=cam['image_size'].numpy()[kept]))
            if slp is not None:
                for f in np.unique(frame):        # whole frames: chunks hold every animal
                    rows = np.flatnonzero(frame == f)
                    tracks = animal[rows] if slp_identity != 'none' else -np.ones_like(rows)
                    groups = animal[rows] if slp_identity == 'groups' else None
                    for c in range(C):
                        slp.add(c, int(f), uv[rows, c], track_ids=tracks, groups=groups)
        w.commit()
    if slp is not None:
        slp.save(slp_path)
    out = dict(bone_trans=bones, keypoint_offsets=offsets_kp, betas=shapes, length=length,
               model=model, path=Path(out_path))
    if return_keypoints_3d:
        out['keypoints_3d'] = np.concatenate(truth)
    return out


__all__ = ['generate_animal_session', 'rest_keypoints', 'observable_bones', 'bone_lengths',
           'body_length', 'displaced_label', 'skin_labels', 'SKIN_LABELS']
