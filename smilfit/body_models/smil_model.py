"""SMILModel: one linear-blend-skinning body model for SMIL, SMAL and SMPL-format files."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from smilfit.registry import BODY_MODELS
from .lbs import (KinematicLevels, chain_transforms, local_transforms, pca_joint_scale_trans,
                  plan_factored_skinning, plan_skinning, pose_feature, readout_matrix,
                  readout_moments, readout_pose_term, readout_posed, readout_sparse,
                  readout_terms, rest_vertices_vb, scale_world, shaped_rest_joints,
                  skin_shape_factored, skin_vertices_vb, skinning_chunk_size,
                  skinning_transforms)
from .markers import marker_moments
from .model_data import BodyModelData, validate_keypoint
from .rotations import axis_angle_to_matrix, to_rotation_matrix
from .io import load_model_data
from .joint_shape import static_joint_shape_dirs

Tensor = torch.Tensor


@dataclass
class BodyModelOutput:
    """What :class:`SMILModel` returns (all in model units, translation included).

    Attributes:
        joints: (B, J, 3) the model's joints: regressed from the posed mesh when the
            model has a joint regressor, else the kinematic joints (``None`` for
            ``kinematics_only``).
        joints_kin: (B, J, 3) kinematic (forward-kinematics) joint positions.
        keypoints: (B, Kp, 3) user-defined keypoints (``SMILModel.keypoint_names``
            order), or ``None`` when not requested / none defined.
        vertices: (B, V, 3) posed vertices, or ``None`` when not requested.
        v_shaped: (B, V, 3) shaped rest-pose vertices, or ``None`` unless requested.
        rot_mats: (B, J, 3, 3) local joint rotations (root = global orientation).
        joint_transforms: (B, J, 4, 4) world transform of each joint's frame
            (scale included; without ``transl``).
    """

    joints: Optional[Tensor]
    joints_kin: Tensor
    keypoints: Optional[Tensor]
    vertices: Optional[Tensor]
    v_shaped: Optional[Tensor]
    rot_mats: Tensor
    joint_transforms: Tensor


@BODY_MODELS.register_module()
class SMILModel(nn.Module):
    """A parametric body model with linear blend skinning.

    One class for SMIL, SMAL and SMPL-format models: any kinematic tree, any number
    of joints, vertices and shape coefficients (0 too), regressed or static joints,
    optional pose blendshapes (skipped at no cost when absent), per-joint
    anisotropic log-scale and bone translation (direct or via the model's PCA
    directions ``scaledirs``/``transdirs``), and user-defined keypoints (joints,
    vertices or weighted vertex sets).

    Rotations may be axis-angle (..., 3), 6D (..., 6; first two matrix columns) or
    matrices (..., 3, 3), detected from their trailing shape. The global rotation
    pivots about the root joint; ``transl`` is added after skinning.

    Args:
        model_path: a model file (``.json`` smilfit format or legacy ``.pkl``).
        data: an in-memory model instead of ``model_path``.
        num_betas: use only the first ``num_betas`` shape directions.
        keypoints: name -> definition (``{'joint': name}``, ``{'vertex': id}`` or
            ``{'vertices': [...], 'weights': [...]}``); replaces the model file's
            keypoints. Joint keypoints read ``BodyModelOutput.joints``. Default: the
            model file's keypoints, or one keypoint per joint when it defines none.
        joint_source: ``'auto'`` (regressed when the model is not
            ``static_joint_locs``), ``'regressed'`` or ``'kinematic'``: what
            ``BodyModelOutput.joints`` holds.
        propagate_scaling: default for :meth:`forward`: a joint's scale compounds
            down its subtree (True) or stays local to its segment (False).
        reference_compat: reproduce SMILify's defects (root scale ignored, bone
            translation y negated) for parity with models fitted by it.
        static_joints_follow_shape: for a static-joint model (``static_joint_locs``),
            let the shape coefficients move the joints with the skin around each joint
            (:mod:`smilfit.body_models.joint_shape`; the stored joints are kept at
            ``betas = 0``). Without it such a model's shape never moves its skeleton
            or joint keypoints, and keypoint fits leave ``betas`` at 0.
        factored_min_batch: the smallest batch skinned by the shape-factored path
            (:func:`~.lbs.skin_shape_factored`); ``None`` (default): decided by timing
            both paths once per power-of-two batch size on the model's device (see
            :meth:`factored_skinning_pays`). Both give the same mesh to rounding.
        dtype: floating dtype of the model's buffers.
    """

    def __init__(self, model_path: Optional[str] = None, data: Optional[BodyModelData] = None,
                 *, num_betas: Optional[int] = None,
                 keypoints: Optional[Dict[str, Dict[str, Any]]] = None,
                 joint_source: str = 'auto', propagate_scaling: bool = False,
                 reference_compat: bool = False, static_joints_follow_shape: bool = False,
                 factored_min_batch: Optional[int] = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if (model_path is None) == (data is None):
            raise ValueError('SMILModel needs exactly one of model_path or data')
        if data is None:
            data = load_model_data(model_path)
        else:
            data.validate()
        if joint_source not in ('auto', 'regressed', 'kinematic'):
            raise ValueError(f"joint_source must be 'auto', 'regressed' or 'kinematic', "
                             f'got {joint_source!r}')
        K = data.num_betas if num_betas is None else int(num_betas)
        if not 0 <= K <= data.num_betas:
            raise ValueError(f'num_betas={num_betas} but the model has {data.num_betas} '
                             'shape directions')
        self.data = data
        self.propagate_scaling = bool(propagate_scaling)
        self.reference_compat = bool(reference_compat)
        self.joint_names: List[str] = list(data.joint_names)
        regressed = (joint_source == 'regressed'
                     or (joint_source == 'auto' and not data.static_joint_locs))
        if regressed and not np.any(data.J_regressor):
            raise ValueError('joint_source is regressed but the model\'s J_regressor is all '
                             "zero; use joint_source='kinematic'")
        self.regressed_joints = regressed

        f64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        shapedirs = data.shapedirs[:, :, :K]
        posedirs = data.posedirs
        self.register_buffer('v_template', f64(data.v_template), persistent=False)
        self.register_buffer('shapedirs', f64(shapedirs), persistent=False)
        self.register_buffer('posedirs', f64(posedirs), persistent=False)
        # Rows are validated to sum to 1 within 1e-3; normalising them exactly lets
        # the translation ride on the skinning maps (see forward).
        weights = np.asarray(data.weights, dtype=np.float64)
        self.register_buffer('lbs_weights', f64(weights / weights.sum(1, keepdims=True)),
                             persistent=False)
        self.register_buffer('faces', torch.as_tensor(data.faces, dtype=torch.long),
                             persistent=False)
        self.register_buffer('parents', torch.as_tensor(data.parents, dtype=torch.long),
                             persistent=False)
        # Rest joints as a function of the betas: J(b) = J0 + Jdirs @ b.
        self.static_joints_follow_shape = bool(static_joints_follow_shape)
        if data.static_joint_locs:
            rest_joints = np.asarray(data.J, dtype=np.float64)
            rest_joint_dirs = np.zeros((data.num_joints, 3, K))
            if self.static_joints_follow_shape and K:
                rest_joint_dirs = static_joint_shape_dirs(
                    np.asarray(data.v_template, np.float64), weights, data.parents,
                    rest_joints, np.asarray(shapedirs, np.float64))
        else:
            Jreg = np.asarray(data.J_regressor, dtype=np.float64)
            rest_joints = Jreg @ data.v_template
            rest_joint_dirs = np.einsum('jv,vck->jck', Jreg, shapedirs)
        self.register_buffer('rest_joints', f64(rest_joints), persistent=False)
        self.register_buffer('rest_joint_dirs', f64(rest_joint_dirs), persistent=False)
        for name in ('scaledirs', 'transdirs'):
            value = getattr(data, name)
            self.register_buffer(name, None if value is None else f64(value), persistent=False)
        self.trans_factor = float(data.trans_factor)

        self._skinning_plans: Dict[tuple, tuple] = {}
        # Measured on a 2-core CPU (benchmarks/body_model.py): chunks whose blended maps
        # fit ~1 MiB are fastest.
        self.skinning_cache_bytes = 1 << 20
        if factored_min_batch is not None and not int(factored_min_batch) >= 1:
            raise ValueError(f'factored_min_batch must be None or >= 1, got '
                             f'{factored_min_batch!r}')
        self.factored_min_batch = None if factored_min_batch is None else int(factored_min_batch)
        self._factored_timings: Dict[tuple, bool] = {}
        self._levels = KinematicLevels.from_parents(data.parents)
        self._levels_device: Optional[torch.device] = None
        # rot_mats = cat([global, body])[:, pose_perm] puts the root where it belongs.
        cat_order = np.concatenate([[self._levels.root], self._levels.non_root.numpy()])
        pose_perm = np.empty_like(cat_order)
        pose_perm[cat_order] = np.arange(len(cat_order))
        self.register_buffer('pose_perm', torch.as_tensor(pose_perm), persistent=False)

        if keypoints is None:
            # A model file without keypoint definitions exposes its joints, by name.
            keypoints = data.keypoints or {name: {'joint': name} for name in data.joint_names}
        self._setup_readouts(data, keypoints, shapedirs)
        self.to(dtype)

    def set_keypoints(self, keypoints: Dict[str, Dict[str, Any]]) -> None:
        """The keypoints defined anew (the constructor's forms; e.g. markers), same dtype."""
        dtype, device = self.dtype, self.device
        self._setup_readouts(self.data, dict(keypoints), self.shapedirs.cpu().double().numpy())
        self.to(dtype=dtype, device=device)

    # ------------------------------------------------------------- set-up
    def _setup_readouts(self, data: BodyModelData, keypoints: Dict[str, Dict[str, Any]],
                        shapedirs: np.ndarray) -> None:
        """Stack regressor rows and vertex keypoints into one vertex-free readout."""
        V, J = data.num_vertices, data.num_joints
        rows: List[np.ndarray] = []
        if self.regressed_joints:
            rows.extend(np.asarray(data.J_regressor, dtype=np.float64))
        n_joint_rows = len(rows)
        self.keypoint_names: List[str] = list(keypoints)
        self.keypoint_definitions = {k: dict(v) for k, v in keypoints.items()}  # as given
        # Keypoints index into cat([joints (J), vertex readouts]); markers come last.
        source, markers = [], []
        for name, spec in keypoints.items():
            validate_keypoint(name, spec, self.joint_names, V)
            if 'joint' in spec:
                source.append(self.joint_index(spec['joint']))
                continue
            if 'marker' in spec:
                markers.append((len(source), spec['marker']))
                source.append(-1)
                continue
            row = np.zeros(V)
            if 'vertex' in spec:
                row[int(spec['vertex'])] = 1.0
            else:
                ids = np.asarray(spec['vertices'], dtype=np.int64)
                w = np.asarray(spec.get('weights', np.full(len(ids), 1.0 / len(ids))))
                np.add.at(row, ids, w)
            source.append(J + len(rows) - n_joint_rows)
            rows.append(row)
        self.n_joint_rows = n_joint_rows
        R = len(rows)
        P = data.posedirs.shape[2]
        if R:
            mass, m0, ms, mp = readout_moments(np.stack(rows), data.weights,
                                                data.v_template, shapedirs, data.posedirs)
        else:
            mass, m0 = np.zeros((0, J)), np.zeros((0, J, 3))
            ms, mp = np.zeros((0, J, 3, shapedirs.shape[2])), np.zeros((0, J, 3, P))
        if markers:   # after the vertex rows: pool points J + R - n_joint_rows + i
            parts = [marker_moments(m, self.joint_index(m['joint']), data.weights, shapedirs,
                                    data.posedirs, self.rest_joint_dirs.cpu().double().numpy())
                     for _, m in markers]
            mass, m0, ms, mp = (np.concatenate([a, np.stack([p[i] for p in parts])])
                                for i, a in enumerate((mass, m0, ms, mp)))
            for i, (at, _) in enumerate(markers):
                source[at] = J + R - n_joint_rows + i
            R += len(markers)
        f64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        # One readout matrix per number of betas in use (callers may pass fewer).
        for k in range(ms.shape[3] + 1):
            self.register_buffer(f'readout_matrix_{k}',
                                 readout_matrix(f64(m0), f64(ms[..., :k]), f64(mass)),
                                 persistent=False)
        self.register_buffer('readout_moment_pose', f64(mp), persistent=False)
        # Each readout row reads a few joints' skin: summing its non-zero (row, joint)
        # terms beats the dense product unless they are a good part of R x J.
        row, joint, moments = readout_terms(f64(m0), f64(ms), f64(mass))
        self.sparse_readout = 4 * row.numel() <= R * J
        self.register_buffer('readout_term_row', row, persistent=False)
        self.register_buffer('readout_term_joint', joint, persistent=False)
        self.register_buffer('readout_term_moments', moments, persistent=False)
        self.register_buffer('keypoint_source', torch.as_tensor(source, dtype=torch.long),
                             persistent=False)
        # The joint that carries each point of the pool (a kinematic joint itself; a
        # readout, the joint with the largest skinning mass): the frame of joint-local
        # keypoint offsets.
        carrier = np.argmax(np.abs(mass), axis=1) if R else np.zeros(0, dtype=np.int64)
        if not self.regressed_joints:
            carrier = np.concatenate([np.arange(J), carrier])
        self.register_buffer('pool_joints', torch.as_tensor(carrier, dtype=torch.long),
                             persistent=False)

    def joint_index(self, joint: Union[str, int]) -> int:
        """The index of a joint given by name or index."""
        return self.joint_names.index(joint) if isinstance(joint, str) else int(joint)

    # ---------------------------------------------------------- properties
    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def levels(self) -> KinematicLevels:
        """Kinematic tree levels on the model's device (moved lazily, once per device)."""
        if self._levels_device != self.device:
            self._levels = self._levels.to(self.device)
            self._levels_device = self.device
        return self._levels

    # ------------------------------------------------------------- forward
    def _as_input(self, value: Optional[Union[Tensor, np.ndarray, Sequence]], name: str,
                  batch: int, shape: Sequence[int]) -> Optional[Tensor]:
        if value is None:
            return None
        value = torch.as_tensor(value, device=self.device)
        if not value.is_floating_point():
            raise TypeError(f'{name} must be floating point, got {value.dtype}')
        value = value.to(self.dtype)
        if value.shape[0] != batch or tuple(value.shape[1:len(shape) + 1]) != tuple(shape):
            raise ValueError(f'{name}: expected shape ({batch}, {", ".join(map(str, shape))}'
                             f'{", ..." if len(shape) < value.dim() - 1 else ""}), '
                             f'got {tuple(value.shape)}')
        return value

    def forward(self, global_orient: Optional[Tensor] = None,
                body_pose: Optional[Tensor] = None, betas: Optional[Tensor] = None,
                transl: Optional[Tensor] = None, log_scale: Optional[Tensor] = None,
                bone_trans: Optional[Tensor] = None, scale_weights: Optional[Tensor] = None,
                trans_weights: Optional[Tensor] = None,
                vertex_offsets: Optional[Tensor] = None,
                global_log_scale: Optional[Tensor] = None, *, return_vertices: bool = True,
                return_keypoints: bool = True, return_v_shaped: bool = False,
                propagate_scaling: Optional[bool] = None,
                kinematics_only: bool = False) -> BodyModelOutput:
        """Pose and shape the model. Every argument is optional (zeros / identity).

        Args:
            global_orient: (B, 3|6|3x3) root rotation, pivoting about the root joint.
            body_pose: (B, J-1, 3|6|3x3) local rotations of the non-root joints, in
                joint-index order.
            betas: (B, K') shape coefficients, K' <= num_betas (missing ones are 0).
            transl: (B, 3) translation added to every output point.
            log_scale: (B, J, 3) per-joint, per-axis log scale.
            bone_trans: (B, J, 3) per-joint offset added to the joint's bone vector
                (in the parent's frame; the root's entry is ignored).
            scale_weights: (B, K_s) weights of ``scaledirs`` (adds to ``log_scale``).
            trans_weights: (B, K_t) weights of ``transdirs`` (adds to ``bone_trans``).
            vertex_offsets: (B, V, 3) free-form per-vertex displacements of the shaped
                rest mesh (registration's fine detail), skinned with it. Joints and
                keypoints are not affected (they follow the parametric body), and
                ``v_shaped`` includes them.
            global_log_scale: (B, 1) log of a uniform scale of the posed body (about
                the world origin, before ``transl``): the animal's size in the data's
                units (e.g. a model in arbitrary units fitted to millimetres).
            return_vertices: skin all vertices. Without them only joints and
                keypoints are computed, at a cost independent of the vertex count.
            return_keypoints: compute ``keypoints``.
            return_v_shaped: also return the shaped rest-pose vertices.
            propagate_scaling: override the model's default.
            kinematics_only: the kinematic chain only (``rot_mats``,
                ``joint_transforms``, ``joints_kin``; ``joints``, ``keypoints`` and the
                vertices ``None``): what closed-form Jacobians read, without the
                readout of regressed joints and keypoints.

        Returns:
            :class:`BodyModelOutput`.
        """
        # 1. validated inputs (the PCA scale/translation weights folded into their own)
        x = self._validated_inputs(global_orient, body_pose, betas, transl, log_scale,
                                   bone_trans, scale_weights, trans_weights, vertex_offsets,
                                   global_log_scale)
        B = x['B']
        propagate = self.propagate_scaling if propagate_scaling is None else propagate_scaling
        # 2. shape: the rest joints of these coefficients
        levels = self.levels
        rot_mats = self._rotations(x['global_orient'], x['body_pose'], B)
        rest_joints = shaped_rest_joints(self.rest_joints, self.rest_joint_dirs, x['betas'], B)
        # 3. chain: local transforms down the kinematic tree to the world
        local = local_transforms(rot_mats, rest_joints, self.parents, levels.root,
                                 log_scale=x['log_scale'], bone_trans=x['bone_trans'],
                                 propagate_scaling=propagate,
                                 reference_compat=self.reference_compat)
        world = scale_world(chain_transforms(local, levels), x['global_log_scale'])
        joints_kin = world[..., :3, 3]
        transl = x['transl']
        if transl is not None:
            joints_kin = joints_kin + transl[:, None]
        if kinematics_only:
            return BodyModelOutput(joints=None, joints_kin=joints_kin, keypoints=None,
                                   vertices=None, v_shaped=None, rot_mats=rot_mats,
                                   joint_transforms=world)
        maps = skinning_transforms(world, rest_joints)
        if transl is not None:
            # Skinning weights sum to one, so translating every joint's map
            # translates every skinned point: no extra pass over the vertices.
            maps = torch.cat([maps[..., :3], (maps[..., 3] + transl[:, None])[..., None]], -1)
        pf = pose_feature(rot_mats, levels.non_root) if self.posedirs.shape[2] else None
        # 4. readout: regressed joints and keypoints from the skinning maps
        joints, keypoints = self._readout(maps, x['betas'], pf, joints_kin, return_keypoints)
        # 5. skin: the vertices (and the shaped rest mesh)
        vertices, v_shaped = self._skin(maps, x['betas'], pf, x['vertex_offsets'], B,
                                        return_vertices, return_v_shaped)
        return BodyModelOutput(joints=joints, joints_kin=joints_kin, keypoints=keypoints,
                               vertices=vertices, v_shaped=v_shaped, rot_mats=rot_mats,
                               joint_transforms=world)

    def _validated_inputs(self, global_orient, body_pose, betas, transl, log_scale,
                          bone_trans, scale_weights, trans_weights, vertex_offsets,
                          global_log_scale) -> Dict[str, Any]:
        """The inputs of :meth:`forward` as tensors of the model's dtype and device, their
        shapes checked, ``B``, and ``log_scale`` / ``bone_trans`` with the PCA weights'
        parts added (``None`` where all zero and no gradient can be wanted)."""
        given = [v for v in (global_orient, body_pose, betas, transl, log_scale, bone_trans,
                             scale_weights, trans_weights, vertex_offsets, global_log_scale)
                 if v is not None]
        B = int(torch.as_tensor(given[0]).shape[0]) if given else 1
        J = self.num_joints
        dtype, device = self.dtype, self.device
        global_orient = self._as_input(global_orient, 'global_orient', B, ())
        body_pose = self._as_input(body_pose, 'body_pose', B, (J - 1,))
        transl = self._as_input(transl, 'transl', B, (3,))
        log_scale = self._as_input(log_scale, 'log_scale', B, (J, 3))
        bone_trans = self._as_input(bone_trans, 'bone_trans', B, (J, 3))
        if betas is not None:
            betas = torch.as_tensor(betas, device=device).to(dtype)
            if betas.dim() != 2 or betas.shape[0] != B or betas.shape[1] > self.num_betas:
                raise ValueError(f'betas: expected shape ({B}, <= {self.num_betas}), got '
                                 f'{tuple(betas.shape)}')
        for name, weights, dirs in (('scale_weights', scale_weights, self.scaledirs),
                                    ('trans_weights', trans_weights, self.transdirs)):
            if weights is not None and dirs is None:
                raise ValueError(f'{name} given but the model has no '
                                 f'{name.split("_")[0]}dirs')
        scale_weights = self._as_input(scale_weights, 'scale_weights', B,
                                       () if self.scaledirs is None else
                                       (self.scaledirs.shape[0],))
        trans_weights = self._as_input(trans_weights, 'trans_weights', B,
                                       () if self.transdirs is None else
                                       (self.transdirs.shape[0],))
        if scale_weights is not None or trans_weights is not None:
            pca_scale, pca_trans = pca_joint_scale_trans(
                scale_weights, trans_weights, self.scaledirs, self.transdirs,
                self.trans_factor)
            if pca_scale is not None:
                log_scale = pca_scale if log_scale is None else log_scale + pca_scale
            if pca_trans is not None:
                bone_trans = pca_trans if bone_trans is None else bone_trans + pca_trans
        if not torch.is_grad_enabled():
            # All-zero scales and bone offsets (what a registrant passes when it fits
            # neither) change nothing: skip their arithmetic. CPU only (the check reads
            # the values) and never where autograd may want their gradients.
            log_scale, bone_trans = (None if v is not None and v.device.type == 'cpu'
                                     and not bool(v.any()) else v
                                     for v in (log_scale, bone_trans))
        if global_log_scale is not None:
            global_log_scale = self._as_input(global_log_scale, 'global_log_scale', B, ())
            if global_log_scale.shape != (B, 1):
                raise ValueError(f'global_log_scale: expected shape ({B}, 1), got '
                                 f'{tuple(global_log_scale.shape)}')
        if vertex_offsets is not None:
            vertex_offsets = torch.as_tensor(vertex_offsets, device=device).to(dtype)
            if vertex_offsets.shape != (B, self.num_vertices, 3):
                raise ValueError(f'vertex_offsets: expected shape ({B}, {self.num_vertices}, 3),'
                                 f' got {tuple(vertex_offsets.shape)}')
        return dict(B=B, global_orient=global_orient, body_pose=body_pose, betas=betas,
                    transl=transl, log_scale=log_scale, bone_trans=bone_trans,
                    global_log_scale=global_log_scale, vertex_offsets=vertex_offsets)

    def _readout(self, maps: Tensor, betas: Optional[Tensor], pf: Optional[Tensor],
                 joints_kin: Tensor, return_keypoints: bool):
        """``joints`` (B, J, 3) (regressed, or the kinematic ones) and ``keypoints``
        (B, Kp, 3) or ``None``, read out of the skinning maps (B, J, 3, 4)."""
        readout = None
        if self.readout_moment_pose.shape[0] and (self.regressed_joints or return_keypoints):
            K_in = 0 if betas is None else betas.shape[1]
            if self.sparse_readout:
                readout = readout_sparse(maps, self.readout_term_row, self.readout_term_joint,
                                         self.readout_term_moments,
                                         self.readout_moment_pose.shape[0], betas)
                if pf is not None:
                    readout = readout + readout_pose_term(maps, self.readout_moment_pose, pf)
            else:
                readout = readout_posed(maps, getattr(self, f'readout_matrix_{K_in}'), betas,
                                        self.readout_moment_pose, pf)
        joints = readout[:, :self.n_joint_rows] if self.regressed_joints else joints_kin
        keypoints = None
        if return_keypoints and self.keypoint_names:
            pool = joints if readout is None else torch.cat(
                [joints, readout[:, self.n_joint_rows:]], dim=1)
            keypoints = pool[:, self.keypoint_source]
        return joints, keypoints

    def _skin(self, maps: Tensor, betas: Optional[Tensor], pf: Optional[Tensor],
              vertex_offsets: Optional[Tensor], B: int, return_vertices: bool,
              return_v_shaped: bool):
        """``vertices`` (B, V, 3) and ``v_shaped`` (B, V, 3), each ``None`` unless asked."""
        vertices = v_shaped = None
        if not (return_vertices or return_v_shaped):
            return vertices, v_shaped
        K_in = 0 if betas is None else betas.shape[1]
        factored = (return_vertices and pf is None and vertex_offsets is None
                    and self.factored_skinning_pays(B))
        shaped = None  # (V, 3, B), built once for whoever needs it
        if return_v_shaped or (return_vertices and not factored):
            shaped = rest_vertices_vb(self.v_template, self.shapedirs[..., :K_in], betas, B)
            if vertex_offsets is not None:
                shaped = shaped + vertex_offsets.permute(1, 2, 0)
        if return_v_shaped:
            v_shaped = shaped.permute(2, 0, 1)
        if factored:
            padded = torch.zeros(B, self.num_betas, dtype=self.dtype, device=self.device)
            if K_in:
                padded = torch.cat([betas, padded[:, K_in:]], dim=1)
            vertices = skin_shape_factored(self._skinning_plan(B, factored=True), maps, padded)
        elif return_vertices:
            rest = shaped
            if pf is not None:
                V = self.num_vertices
                rest = torch.addmm(shaped.reshape(V * 3, B), self.posedirs.reshape(V * 3, -1),
                                   pf.T).view(V, 3, B)
            vertices = skin_vertices_vb(rest, self._skinning_plan(B), maps)
        return vertices, v_shaped

    def _rotations(self, global_orient: Optional[Tensor], body_pose: Optional[Tensor],
                   B: int) -> Tensor:
        """(B, J, 3, 3) local rotations with the root's at its own index."""
        J = self.num_joints
        if (global_orient is not None and body_pose is not None and global_orient.dim() == 2
                and global_orient.shape[-1] == 3 and body_pose.dim() == 3
                and body_pose.shape[-1] == 3):   # both axis-angle: one Rodrigues pass
            return axis_angle_to_matrix(torch.cat([global_orient[:, None], body_pose],
                                                  dim=1)[:, self.pose_perm])
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        root = (eye.expand(B, 1, 3, 3) if global_orient is None
                else to_rotation_matrix(global_orient, 1, 'global_orient')[:, None])
        body = (eye.expand(B, J - 1, 3, 3) if body_pose is None
                else to_rotation_matrix(body_pose, 2, 'body_pose'))
        return torch.cat([root, body], dim=1)[:, self.pose_perm]

    def factored_skinning_pays(self, batch: int) -> bool:
        """Whether a batch of ``batch`` meshes is skinned by the shape-factored path.

        With ``factored_min_batch`` set: from that batch on. Otherwise measured: the
        factored path does (K + 1) times the multiply-adds of the chunked one (K shape
        coefficients) but writes no shaped mesh and no blended maps, so which is faster
        depends on the mesh and the machine (on a 2-core VM, one thread: the SMIL mouse,
        11k vertices and K = 3, from batch 16; the stick insect, 3k vertices, 55 joints
        and K = 5, not up to 64). Both paths are timed once per power-of-two batch
        bucket, device and dtype (at the rest pose, without autograd: a few forward
        passes) and the choice is kept. A single mesh always takes the chunked path.
        """
        if self.factored_min_batch is not None:
            return batch >= self.factored_min_batch
        if batch < 2 or self.posedirs.shape[2]:  # pose blendshapes: never factored
            return False
        bucket = 1 << (int(batch).bit_length() - 1)
        key = (bucket, self.device, self.dtype)
        pays = self._factored_timings.get(key)
        if pays is None and torch.compiler.is_compiling():
            return False  # no timing inside a compiled graph: the chunked path
        if pays is None:
            pays = self._time_factored_skinning(bucket)
            self._factored_timings[key] = pays
        return pays

    def _time_factored_skinning(self, batch: int, repeats: int = 2) -> bool:
        """Whether the factored path skins ``batch`` rest-pose meshes faster (best of
        ``repeats`` after one warm-up each)."""
        dev = self.device
        inputs = dict(body_pose=torch.zeros(batch, self.num_joints - 1, 3, dtype=self.dtype,
                                            device=dev),
                      betas=torch.zeros(batch, self.num_betas, dtype=self.dtype, device=dev))
        best = {}
        saved = self.factored_min_batch
        try:
            with torch.no_grad():
                for factored, threshold in ((True, 1), (False, batch + 1)):
                    self.factored_min_batch = threshold
                    times = []
                    for _ in range(repeats + 1):
                        if dev.type == 'cuda':
                            torch.cuda.synchronize(dev)
                        start = time.perf_counter()
                        self(**inputs, return_vertices=True, return_keypoints=False)
                        if dev.type == 'cuda':
                            torch.cuda.synchronize(dev)
                        times.append(time.perf_counter() - start)
                    best[factored] = min(times[1:])
        finally:
            self.factored_min_batch = saved
        return best[True] < best[False]

    def _skinning_plan(self, batch: int, factored: bool = False) -> tuple:
        """Skinning chunks for this batch size, built once per chunk size/device/dtype."""
        chunk = skinning_chunk_size(self.num_vertices, batch, self.lbs_weights.element_size(),
                                    cache_bytes=self.skinning_cache_bytes)
        key = (factored, chunk, self.device, self.dtype)
        if key not in self._skinning_plans:
            self._skinning_plans[key] = (
                plan_factored_skinning(self.lbs_weights, self.v_template, self.shapedirs, chunk)
                if factored else plan_skinning(self.lbs_weights, chunk))
        return self._skinning_plans[key]

    def extra_repr(self) -> str:
        return (f'name={self.data.name!r}, vertices={self.num_vertices}, '
                f'joints={self.num_joints}, betas={self.num_betas}, '
                f'keypoints={len(self.keypoint_names)}, '
                f'joints={"regressed" if self.regressed_joints else "kinematic"}, '
                f'propagate_scaling={self.propagate_scaling}, '
                f'reference_compat={self.reference_compat}')
