"""Analytic Jacobians of a body model's points (joints and keypoints) w.r.t. its parameters.

Second-order fitting (:mod:`smilfit.registrants.levenberg_marquardt`) needs, per sample,
the Jacobian of every observed model point with respect to the fitted parameters.
Generic forward-mode autodiff costs one model evaluation per parameter (~170 for a
55-joint model); the kinematic chain's structure gives it in closed form for the cost of
a few batched products:

Every model point is a *readout* ``x_i = sum_k A_k [m_ik(beta); c_ik]`` of the skinning
maps ``A_k`` (a kinematic joint is the readout ``A_j [J_j; 1]``; a regressed joint or a
vertex keypoint sums over the joints that skin its vertices). Rotating joint ``m`` by a
small axis-angle step moves every map of its subtree rigidly about the joint's world
position ``p_m``, so

    dx_i / dtheta_{m,a} = W_{m,a} (q_im - mu_im p_m),
    W_{m,a} = N_m [omega_{m,a}]_x N_m^-1,   N_m = M_m S_m^-1 R_m^T,

with ``q_im`` / ``mu_im`` the readout restricted to the subtree of ``m``, ``M_m`` the
world linear map of joint ``m``, ``R_m`` its local rotation, ``S_m`` its own scale
(``N_m`` is the parent's world map times the parent's inverse row scale, which also
covers ``propagate_scaling``), and ``omega_{m,a}`` column ``a`` of the SO(3) left
Jacobian of the axis-angle ``theta_m``. Shape coefficients move the rest joints, hence
every bone offset ``o_m`` (seen through the parent's world map) and the moments.
Translation adds to every point with its mass ``sum_k c_ik``.

A bone translation ``d_m`` (``bone_trans``, added to joint ``m``'s rest offset in its
parent's frame) shifts the whole subtree of ``m`` by ``M_p d_m`` (``M_p`` the parent's
world linear map), so ``dx_i / dd_m = mu_im M_p``. A joint-frame keypoint offset
``o_k`` (``keypoint_offsets``, attached points, see :meth:`PointJacobian.sparse`) moves
its point by ``M_j o_k`` (``M_j`` the carrying joint's world linear map, global scale
included), so ``dx / do_k = M_j``.

Supported: axis-angle ``global_orient``/``body_pose``, ``betas``, ``transl``,
``global_log_scale``, ``bone_trans`` and joint-frame ``keypoint_offsets`` as fitted
parameters, with any fixed ``log_scale``; models without pose blendshapes. Anything
else raises :class:`UnsupportedJacobian`.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from smilfit.body_models.rotations import skew

Tensor = torch.Tensor

#: Parameters whose point Jacobians are available in closed form.
JACOBIAN_PARAMS = ('global_orient', 'body_pose', 'transl', 'betas', 'global_log_scale',
                   'bone_trans', 'keypoint_offsets')


class UnsupportedJacobian(ValueError):
    """The closed-form Jacobian does not cover this model or parameter."""


def so3_left_jacobian(theta: Tensor) -> Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) left Jacobian ``J_l`` of SO(3).

    ``exp(theta + d) = exp(J_l(theta) d) exp(theta)`` to first order, so column ``a`` is
    the world-frame angular velocity of ``d theta_a``. Series near 0 keep it smooth.
    """
    dims = theta.dim() - 1
    return so3_left_jacobian_components(theta.movedim(-1, 0)).permute(
        *range(2, dims + 2), 0, 1)


def so3_left_jacobian_components(theta: Tensor) -> Tensor:
    """Component-major :func:`so3_left_jacobian`: (3, ...) axis-angle -> (3, 3, ...),
    entry ``[r, c]`` of ``J_l`` in slice ``[r, c]`` (wide elementwise products read
    whole rows instead of every third value)."""
    x, y, z = theta[0], theta[1], theta[2]
    angle2 = x * x + y * y + z * z
    small = angle2 < 1e-8
    safe2 = torch.where(small, 1.0, angle2)
    angle = safe2.sqrt()
    a = torch.where(small, 0.5 - angle2 / 24.0, (1.0 - torch.cos(angle)) / safe2)
    b = torch.where(small, 1.0 / 6.0 - angle2 / 120.0, (angle - torch.sin(angle)) / (safe2 * angle))
    # I + a K + b K^2 with K^2 = theta theta^T - |theta|^2 I, its nine entries written out
    # (no matrix products, few temporaries)
    c = 1.0 - b * angle2
    bx, by, bz = b * x, b * y, b * z
    bxy, bxz, byz = bx * y, bx * z, by * z
    ax, ay, az = a * x, a * y, a * z
    return torch.stack([c + bx * x, bxy - az, bxz + ay,
                        bxy + az, c + by * y, byz - ax,
                        bxz - ay, byz + ax, c + bz * z]).view((3, 3) + x.shape)


def subtree_matrix(parents: Tensor, root: int) -> Tensor:
    """(J, J) float: entry ``[k, m]`` is 1 when joint ``k`` is ``m`` or below it."""
    J = parents.shape[0]
    par = parents.tolist()
    sub = np.zeros((J, J))     # filled entry by entry: numpy, not J^2 tiny tensor writes
    for k in range(J):
        m = k
        seen = 0
        while True:
            sub[k, m] = 1.0
            if m == root or seen > J:
                break
            m = par[m]
            seen += 1
    return torch.from_numpy(sub)


def _readout_parts(model, K: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The model's readout moments ``m0`` (R, J, 3), ``ms`` (R, J, 3, K), mass (R, J)."""
    J = model.num_joints
    mat = getattr(model, f'readout_matrix_{K}')
    R = mat.shape[1]
    m0 = mat[:J * 3].T.reshape(R, J, 3)
    ms = mat[J * 3:J * 3 + J * 3 * K].T.reshape(R, J, 3, K)
    mass = mat[J * 3 + J * 3 * K:].T
    return m0, ms, mass


def check_supported(model, fitted: Sequence[str], params: Mapping[str, Tensor]) -> None:
    """Raise :class:`UnsupportedJacobian` naming what the closed form does not cover."""
    bad = [n for n in fitted if n not in JACOBIAN_PARAMS]
    if bad:
        raise UnsupportedJacobian(
            f'closed-form Jacobians cover fitting {list(JACOBIAN_PARAMS)}, not {bad}; '
            'use an LBFGS/Adam stage for these')
    if model.posedirs.shape[2]:
        raise UnsupportedJacobian('closed-form Jacobians do not cover pose blendshapes '
                                  '(posedirs); use an LBFGS/Adam stage')
    for name in ('global_orient', 'body_pose'):
        value = params.get(name)
        if value is not None and value.shape[-1] != 3:
            raise UnsupportedJacobian(f'{name}: closed-form Jacobians need axis-angle '
                                      f'rotations (..., 3), got {tuple(value.shape)}')


class PointJacobian:
    """Closed-form point Jacobians of one body model (structure precomputed once).

    Every point of the model's *point pool* (its J joints, then its vertex keypoint
    readouts; ``output.keypoints`` index it through ``model.keypoint_source``) is a sum
    over a few (point, joint) *terms* ``u_ik = A_k [m_ik; c_ik]``; rotating joint ``m``
    moves only the points with a term in its subtree. Both sparsity patterns are
    fixed by the model, so they are found here once and every call works on the
    non-zero pairs only (a few hundred for a 55-joint model instead of N x J).

    Points with fixed joint-frame offsets (``pool point + M_j o``, see
    :meth:`sparse`'s ``attach``) are extra points whose offset is one more term of the
    carrying joint ``j``: the same formulas cover them.

    Args:
        model: a :class:`~smilfit.body_models.SMILModel` (no pose blendshapes).
    """

    def __init__(self, model) -> None:
        if model.posedirs.shape[2]:
            raise UnsupportedJacobian('closed-form Jacobians do not cover pose blendshapes '
                                      '(posedirs); use an LBFGS/Adam stage')
        self.model = model
        J = model.num_joints
        dtype, device = model.rest_joints.dtype, model.rest_joints.device
        self.root = model.levels.root
        self.sub = subtree_matrix(model.parents, self.root).to(device=device, dtype=dtype)
        m0, ms, mass = _readout_parts(model, model.num_betas)
        rows_i, rows_k, m0_u, ms_u, mass_u = [], [], [], [], []
        read_rows = torch.arange(m0.shape[0], device=device)
        first = 0
        if not model.regressed_joints:  # kinematic joint j is the readout A_j [J_j(beta); 1]
            eye = torch.arange(J, device=device)
            rows_i.append(eye)
            rows_k.append(eye)
            m0_u.append(model.rest_joints)
            ms_u.append(model.rest_joint_dirs)
            mass_u.append(torch.ones(J, dtype=dtype, device=device))
            read_rows = read_rows[model.n_joint_rows:]
            first = J
        used = (mass[read_rows] != 0) | (m0[read_rows].abs().sum(-1) > 0) | (
            ms[read_rows].abs().sum((-2, -1)) > 0)
        r_idx, k_idx = torch.nonzero(used, as_tuple=True)
        rows_i.append(first + r_idx)
        rows_k.append(k_idx)
        m0_u.append(m0[read_rows][r_idx, k_idx])
        ms_u.append(ms[read_rows][r_idx, k_idx])
        mass_u.append(mass[read_rows][r_idx, k_idx])
        self.num_points = first + int(read_rows.numel())   # N, the model's point pool
        self.parents = model.parents.clamp_min(0)
        self.base = _TermStructure.build(
            model, self.sub, torch.cat(rows_i), torch.cat(rows_k), torch.cat(m0_u),
            torch.cat(ms_u), torch.cat(mass_u), self.num_points, num_offset_terms=0)
        self._attached: Dict[Tuple[int, ...], _TermStructure] = {}
        self._pairs: Dict[tuple, Dict[str, Tensor]] = {}
        self._plans: Dict[tuple, dict] = {}
        self._betas_maps: Dict[tuple, Tuple[Tensor, Tensor]] = {}

    def _structure(self, attach: Optional[Tensor], keep: Optional[Tensor] = None
                   ) -> '_TermStructure':
        """The term structure of the pool points ``keep`` (K,) (sorted; default: all N,
        renumbered 0..K-1) plus ``attach`` (X,) extra points (K + x): each a copy of a
        pool point plus an offset carried by that point's joint (cached). Points no
        handler reads are left out: their blocks would cost as much as the others."""
        has_attach = attach is not None and bool(attach.numel())
        if not has_attach and keep is None:
            return self.base
        key = (tuple(attach.tolist()) if has_attach else (),
               None if keep is None else tuple(keep.tolist()))
        if key not in self._attached:
            b = self.base
            device = b.term_m0.device
            if keep is None:
                sel = torch.arange(b.term_point.numel(), device=device)
                point, K = b.term_point, self.num_points
            else:
                keep = keep.to(device)
                sel = torch.nonzero(torch.isin(b.term_point, keep)).flatten()
                point, K = torch.searchsorted(keep, b.term_point[sel]), int(keep.numel())
            parts = dict(point=[point], joint=[b.term_joint[sel]], m0=[b.term_m0[sel]],
                         ms=[b.term_ms[sel]], mass=[b.term_mass[sel]])
            X = int(attach.numel()) if has_attach else 0
            if X:
                carriers = self.model.pool_joints.to(device)[attach]
                # Copy every term of each base point onto its extra point ...
                pick = b.point_sum[attach]                                   # (X, U)
                x_idx, u_idx = torch.nonzero(pick, as_tuple=True)
                # ... then one offset term per extra point (moment = offset, mass 0).
                rows = torch.arange(X, device=device)
                for name, value in (('point', [K + x_idx, K + rows]),
                                    ('joint', [b.term_joint[u_idx], carriers]),
                                    ('m0', [b.term_m0[u_idx], torch.zeros(
                                        X, 3, dtype=b.term_m0.dtype, device=device)]),
                                    ('ms', [b.term_ms[u_idx], b.term_ms.new_zeros(
                                        (X,) + b.term_ms.shape[1:])]),
                                    ('mass', [b.term_mass[u_idx], b.term_mass.new_zeros(X)])):
                    parts[name] += value
            self._attached[key] = _TermStructure.build(
                self.model, self.sub, *(torch.cat(parts[k]) for k in
                                        ('point', 'joint', 'm0', 'ms', 'mass')),
                K + X, num_offset_terms=X)
        return self._attached[key]

    def __call__(self, params: Mapping[str, Tensor], fitted: Sequence[str]
                 ) -> Tuple[Tensor, Tensor]:
        """Points (B, N, 3) and their dense Jacobian (B, N, 3, P) w.r.t. ``fitted``.

        Columns follow ``fitted``'s order, each parameter flattened row-major
        (``body_pose``: (J-1)*3 in (joint slot, axis) order). See :meth:`sparse`."""
        jac = self.sparse(params, fitted)
        return jac.points, jac.to_dense()

    def sparse(self, params: Mapping[str, Tensor], fitted: Sequence[str],
               attach: Optional[Tensor] = None, offsets: Optional[Tensor] = None,
               offset_rows: Optional[Tensor] = None, output=None,
               keep: Optional[Tensor] = None) -> 'SparsePointJacobian':
        """The Jacobian in its sparse form (rotation blocks per (point, joint) pair).

        Columns follow ``fitted``'s order, each parameter flattened row-major
        (``body_pose``: (J-1)*3 in (joint slot, axis) order).

        Args:
            params: per-sample model inputs (``global_orient`` (B, 3), ``body_pose``
                (B, J-1, 3), ``betas`` (B, K'), ``transl``, ``log_scale``,
                ``bone_trans``).
            fitted: names among :data:`JACOBIAN_PARAMS`.
            attach: optional (X,) pool points to which ``offsets`` attach: point
                ``N + x`` is pool point ``attach[x]`` plus ``M_j offsets[:, x]``, with
                ``M_j`` the world linear map of its carrying joint
                (``model.pool_joints``); the offsets are held fixed.
            offsets: (B or 1, X, 3) joint-frame offsets (model units).
            offset_rows: (X,) long, the row of ``params['keypoint_offsets']`` each
                attached offset is (-1: none); needed when ``keypoint_offsets`` is
                fitted (columns ``3 * row + axis``).
            output: the model's output at ``params`` when already computed (its
                ``joints_kin``, ``joint_transforms`` and ``rot_mats`` are read), to
                skip the forward pass.
            keep: optional (K,) sorted pool points to compute (default: all N); the
                points are then these K (in this order), then the attached ones.
        """
        model = self.model
        st = self._structure(attach, keep)
        attached_offsets = offsets
        check_supported(model, fitted, params)
        inputs = {k: params[k] for k in ('global_orient', 'body_pose', 'betas', 'transl',
                                         'log_scale', 'bone_trans', 'global_log_scale')
                  if params.get(k) is not None}
        out = output
        if out is None:
            with torch.no_grad():
                out = model(**inputs, kinematics_only=True)
        dtype, device = out.joints_kin.dtype, out.joints_kin.device
        B, J = out.joints_kin.shape[:2]
        N, root = st.num_points, self.root
        betas = inputs.get('betas')
        K = 0 if betas is None else betas.shape[1]
        sizes = dict(global_orient=3, transl=3, body_pose=(J - 1) * 3, betas=K,
                     global_log_scale=1, bone_trans=J * 3,
                     keypoint_offsets=_num_offset_rows(params, fitted) * 3)
        offsets, P = {}, 0
        for name in fitted:
            offsets[name] = P
            P += sizes[name]
        world = out.joint_transforms
        M = world[..., :3, :3]                          # (B, J, 3, 3) world linear maps
        p = out.joints_kin                              # (B, J, 3) incl. translation
        t_maps = world[..., :3, 3] - (M @ _rest_joints(model, betas, B)[..., None]).squeeze(-1)
        transl = inputs.get('transl')
        if transl is not None:
            t_maps = t_maps + transl[:, None]
        moment = st.term_m0.expand(B, -1, -1)
        if K:
            moment = moment + torch.einsum('uck,bk->buc', st.term_ms[..., :K], betas)
        if st.num_offset_terms:  # the offset terms (last) carry the offsets as moments
            X = st.num_offset_terms
            moment = torch.cat([moment[:, :-X], attached_offsets.to(moment).expand(B, X, 3)],
                               dim=1)
        Mu = M.index_select(1, st.term_joint)           # (B, U, 3, 3)
        u = (Mu @ moment[..., None]).squeeze(-1) + st.term_mass[:, None] * t_maps.index_select(
            1, st.term_joint)                           # (B, U, 3)
        points = torch.einsum('nu,buc->bnc', st.point_sum, u)
        # Columns of the non-rotation parameters, stored densely (a handful).
        dense_names = [n for n in fitted if n not in _BLOCK_PARAMS]
        dense_cols = torch.cat([torch.arange(offsets[n], offsets[n] + sizes[n], device=device)
                                for n in dense_names]) if dense_names else torch.zeros(
            0, dtype=torch.long, device=device)
        local = {}
        for n in dense_names:
            local[n] = sum(sizes[m] for m in dense_names[:dense_names.index(n)])
        D = torch.zeros(B, N, 3, int(dense_cols.numel()), dtype=dtype, device=device)
        rot_point = rot_col = torch.zeros(0, dtype=torch.long, device=device)
        rot = torch.zeros(B, 0, 3, 3, dtype=dtype, device=device)

        if 'transl' in fitted:
            o = local['transl']
            D[..., o:o + 3] = st.point_mass[:, None, None] * torch.eye(
                3, dtype=dtype, device=device)
        if 'global_log_scale' in fitted:  # x = s x0 + mass transl: dx / dlog s = s x0
            o = local['global_log_scale']
            shift = 0.0 if transl is None else st.point_mass[:, None] * transl[:, None]
            D[..., o] = points - shift

        if 'global_orient' in fitted or 'body_pose' in fitted:
            pairs = self._rotation_pairs(st, fitted, offsets)
            m_e = pairs['joint']
            log_scale = inputs.get('log_scale')
            if log_scale is not None and not bool(log_scale.any()):
                log_scale = None   # all zero (the registrant's default): no joint scales
            rot = out.rot_mats
            angles = _joint_axis_angles(model, inputs, B, dtype, device)
            if log_scale is None:
                # No per-joint scale: N_m = M_m R_m^T is the parent's world rotation
                # times the global scale s, so W_{m,a} = N_m [omega_{m,a}]_x N_m^-1 =
                # [N_m omega_{m,a} / s]_x and each block's column a is a cross product.
                # N_m omega = M_m R_m^T J_l(theta_m) = M_m J_l(theta_m)^T (R^T J_l = J_r
                # = J_l^T), and s is the global scale: no products with R, no norms.
                # Component-major and sample-last (3c, 3a, ., B): the 3 x 3 products and
                # cross products are a few wide multiply-adds, the gathers copy whole
                # rows, and the blocks come out in the layout the normal equations read
                # (``rot`` is a (B, E', 3c, 3a) view of them).
                om = so3_left_jacobian_components(angles.permute(2, 1, 0)).transpose(0, 1)
                mc = M.permute(2, 3, 1, 0).contiguous()          # (3c, 3d, J, B)
                glog = inputs.get('global_log_scale')
                if glog is not None:
                    mc = mc * (-glog[:, 0]).exp()
                # (om: (3d, 3a, J, B), J_l^T)
                v = mc[:, 0, None] * om[0] + mc[:, 1, None] * om[1] + mc[:, 2, None] * om[2]
                v = v.reshape(9, J, B).index_select(1, m_e).view(3, 3, -1, B)
                # each pair's lever: its terms below the joint less their mass at it
                rc = pairs['sum'] @ u.permute(2, 1, 0) - (
                    pairs['mass'][:, None] * p.permute(2, 1, 0).index_select(1, m_e))  # (3c, E', B)
                rot = torch.stack([v[1] * rc[2] - v[2] * rc[1], v[2] * rc[0] - v[0] * rc[2],
                                   v[0] * rc[1] - v[1] * rc[0]]).permute(3, 2, 0, 1)
            else:
                rel = torch.einsum('eu,buc->bec', pairs['sum'], u) - (
                    pairs['mass'][:, None] * p.index_select(1, m_e))  # (B, E, 3)
                own = log_scale.exp()
                if model.reference_compat:  # the reference never applies the root's own scale
                    own = own.clone()
                    own[:, root] = 1.0
                # N_m^-1 = R_m S_m M_m^-1 and N_m = M_m S_m^-1 R_m^T.
                n_inv = (rot * own[:, :, None, :]) @ torch.linalg.inv(M)
                n_mat = (M / own[:, :, None, :]) @ rot.transpose(-1, -2)
                # W_{m,a} = N_m [omega_{m,a}]_x N_m^-1: (B, J, 3a, 3c, 3d), stored
                # (c, a, d) so that each pair's block W rel (B, E, 3c, 3a) is three
                # scaled copies.
                omega = so3_left_jacobian(angles)
                W = n_mat[:, :, None] @ skew(omega.transpose(-1, -2)) @ n_inv[:, :, None]
                W = W.permute(0, 1, 3, 2, 4).reshape(B, J, 9, 3).index_select(1, m_e)
                rot = (W[..., 0] * rel[..., 0, None] + W[..., 1] * rel[..., 1, None]
                       + W[..., 2] * rel[..., 2, None]).view(B, -1, 3, 3)  # (B, E', 3, 3a)
            rot_point, rot_col = pairs['point'], pairs['col']
        blocks = [(rot_point, rot_col, rot)]
        if 'bone_trans' in fitted:
            blocks.append(self._bone_blocks(st, M, offsets['bone_trans']))
        if 'keypoint_offsets' in fitted:
            blocks.append(_offset_blocks(st, M, attach, offset_rows,
                                         self.model.pool_joints.to(device),
                                         offsets['keypoint_offsets']))
        if len(blocks) > 1:   # (a cat of one block would copy it)
            rot_point = torch.cat([b[0] for b in blocks])
            rot_col = torch.cat([b[1] for b in blocks])
            # stored (3c, 3a, E, B) as the normal equations read them
            rot = torch.cat([b[2].permute(2, 3, 1, 0) for b in blocks], dim=2).permute(
                3, 2, 0, 1)

        if 'betas' in fitted and K > 0:  # a model without shape directions has no columns
            # d points / d betas = sum over joints j of M_j C_j plus s C_root: one product
            # of the world linear maps with a constant map (see _betas_map).
            C, c_root = self._betas_map(st, K, dtype, device)      # (J*3d, N*K), (3c, N*K)
            scale = inputs.get('global_log_scale')
            scale = (torch.ones(B, 1, 1, dtype=dtype, device=device) if scale is None
                     else scale[:, 0].exp()[:, None, None])
            d_betas = torch.baddbmm(scale * c_root, M.transpose(1, 2).reshape(B, 3, J * 3),
                                    C.expand(B, -1, -1))           # (B, 3c, N*K)
            o = local['betas']
            D[..., o:o + K] = d_betas.view(B, 3, N, K).transpose(1, 2)
        plan_key = (id(st), tuple(fitted), P, tuple(rot_point.shape),
                    tuple(dense_cols.tolist()))
        plan = self._plans.setdefault(plan_key, {})
        if plan.get('rot_point') is not None and torch.equal(plan['rot_point'], rot_point) \
                and torch.equal(plan['rot_col'], rot_col):
            rot_point, rot_col = plan['rot_point'], plan['rot_col']
        else:
            plan.clear()
            plan.update(rot_point=rot_point, rot_col=rot_col)
        return SparsePointJacobian(points, rot_point, rot_col, rot, dense_cols, D, P, plan)


    def _rotation_pairs(self, st: '_TermStructure', fitted: Sequence[str],
                        offsets: Mapping[str, int]) -> Dict[str, Tensor]:
        """The (point, joint) pairs of ``st`` whose joint rotation is fitted (cached):
        ``point``, ``joint``, first ``col`` (E',), their term sums ``sum`` (E', U) and
        masses ``mass`` (E',)."""
        key = (id(st), 'global_orient' in fitted, 'body_pose' in fitted,
               offsets.get('global_orient'), offsets.get('body_pose'))
        pairs = self._pairs.get(key)
        if pairs is None:
            slot = st.pair_slot
            col = torch.full_like(slot, -1)
            if 'global_orient' in fitted:
                col = torch.where(slot == 0, torch.full_like(slot, offsets['global_orient']),
                                  col)
            if 'body_pose' in fitted:
                col = torch.where(slot > 0, offsets['body_pose'] + 3 * (slot - 1), col)
            keep = torch.nonzero(col >= 0).flatten()
            pairs = dict(point=st.pair_point[keep], joint=st.pair_joint[keep], col=col[keep],
                         sum=st.pair_sum[keep], mass=st.pair_mass[keep])
            self._pairs[key] = pairs
        return pairs

    def _betas_map(self, st: '_TermStructure', K: int, dtype, device
                   ) -> Tuple[Tensor, Tensor]:
        """The constant maps of the points' shape derivatives (cached): ``C`` (J*3, N*K)
        and ``c_root`` (3, N*K) with ``d x_n / d beta = sum_j M_j C_j[n] + s c_root[n]``
        (``M_j`` the world linear maps, ``s`` the global scale).

        A term u (point n, joint k, mass c_u) moves by ``M_k (ms_u - c_u dirs_k)`` (its
        moment's shape part, relative to its joint's) plus ``c_u`` times the chain sum of
        ``N_p(m) d_offset_m`` over the joints m whose chain holds k: the first lands on
        joint k, the second on each such m's parent (the root's offset is seen through
        the global scale only)."""
        key = (id(st), K, dtype, device)
        maps = self._betas_maps.get(key)
        if maps is None:
            model, J, N = self.model, self.model.num_joints, st.num_points
            dirs = model.rest_joint_dirs[..., :K].to(dtype=torch.float64)      # (J, 3, K)
            d_offset = dirs - dirs[self.parents.cpu()]
            d_offset[self.root] = dirs[self.root]
            chain_mass = st.point_chain_mass.to('cpu', torch.float64)        # (N, J)
            C = torch.zeros(J, 3, N, K, dtype=torch.float64)
            C.index_put_((st.term_joint.cpu()[:, None], torch.arange(3)[None, :],
                          st.term_point.cpu()[:, None]),
                         st.term_ms_rel[..., :K].to('cpu', torch.float64), accumulate=True)
            through = torch.einsum('mdk,nm->mdnk', d_offset, chain_mass)      # (J, 3, N, K)
            child = torch.arange(J) != self.root
            C.index_add_(0, self.parents.cpu()[child], through[child])
            maps = (C.reshape(J * 3, N * K).to(device, dtype),
                    through[self.root].reshape(3, N * K).to(device, dtype))
            self._betas_maps[key] = maps
        return maps

    def _bone_blocks(self, st: '_TermStructure', M: Tensor, first: int
                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """``bone_trans`` blocks: point, first column and (B, E, 3, 3) ``mu_im M_p(m)`` of
        every (point, non-root joint) pair with mass below the joint."""
        keep = (st.pair_joint != self.root) & (st.pair_mass != 0)
        joint = st.pair_joint[keep]
        block = st.pair_mass[keep][:, None, None] * M[:, self.parents[joint]]
        if self.model.reference_compat:  # the reference negates y of bone translations
            block = block * torch.tensor([1.0, -1.0, 1.0], dtype=M.dtype, device=M.device)
        return st.pair_point[keep], first + 3 * joint, block

@dataclass
class _TermStructure:
    """The fixed sparsity of a point set: its (point, joint) terms and rotation pairs.

    ``U`` terms ``u = A_k [m; c]`` (point, joint ``k``, moment ``m0 + ms beta``, mass
    ``c``); ``E`` pairs (point ``i``, joint ``m``) where ``i`` has a term below ``m``.
    The last ``num_offset_terms`` terms carry per-call moments (attached offsets).
    """

    term_point: Tensor      # (U,) point of each term
    term_joint: Tensor      # (U,) joint of each term
    term_m0: Tensor         # (U, 3)
    term_ms: Tensor         # (U, 3, K)
    term_mass: Tensor       # (U,)
    num_points: int
    num_offset_terms: int
    point_sum: Tensor       # (N, U) 1 where term u belongs to point n
    point_mass: Tensor      # (N,)
    pair_point: Tensor      # (E,)
    pair_joint: Tensor      # (E,)
    pair_sum: Tensor        # (E, U) the terms of pair (i, m): i's terms below m
    pair_mass: Tensor       # (E,)
    pair_slot: Tensor       # (E,) pose slot of the pair's joint (0: global_orient)
    term_ms_rel: Tensor     # (U, 3, K) ms_u - c_u dirs_k: the moment's shape part
    #                         relative to its joint's (the betas' Jacobian)
    point_chain_mass: Tensor  # (N, J) the summed mass of point n's terms on joints
    #                           whose chain holds joint m

    @classmethod
    def build(cls, model, sub: Tensor, term_point: Tensor, term_joint: Tensor,
              term_m0: Tensor, term_ms: Tensor, term_mass: Tensor, num_points: int,
              num_offset_terms: int) -> '_TermStructure':
        dtype, device = term_m0.dtype, term_m0.device
        U = term_point.numel()
        point_sum = torch.zeros(num_points, U, dtype=dtype, device=device)
        point_sum[term_point, torch.arange(U, device=device)] = 1.0
        in_sub = sub[term_joint]                           # (U, J): term joint below m
        touched = (point_sum @ in_sub) > 0                 # (N, J)
        pair_point, pair_joint = torch.nonzero(touched, as_tuple=True)
        pair_sum = point_sum[pair_point] * in_sub[:, pair_joint].T
        point_joint_mass = torch.zeros(num_points, sub.shape[0], dtype=dtype, device=device)
        point_joint_mass.index_put_((term_point, term_joint), term_mass, accumulate=True)
        dirs = model.rest_joint_dirs.to(device=device, dtype=dtype)[..., :term_ms.shape[-1]]
        term_ms_rel = term_ms - term_mass[:, None, None] * dirs[term_joint]
        return cls(term_point, term_joint, term_m0, term_ms, term_mass, num_points,
                   num_offset_terms, point_sum, point_sum @ term_mass, pair_point,
                   pair_joint, pair_sum, pair_sum @ term_mass,
                   model.pose_perm.to(device)[pair_joint], term_ms_rel,
                   point_joint_mass @ sub)


@dataclass
class SparsePointJacobian:
    """Jacobian of model points in block-sparse form.

    Attributes:
        points: (B, N, 3) the points.
        rot_point, rot_col: (E,) for each block, the point and the first of its 3
            parameter columns: (point, rotated joint) pairs (axis-angle), (point,
            translated bone) pairs (``bone_trans``), attached points (their offset).
        rot: (B, E, 3, 3) the block: d point (3) / d parameter triple (3).
        dense_col: (P_d,) the columns of the other parameters.
        dense: (B, N, 3, P_d) their Jacobian.
        num_params: P, the total number of columns.
        plan: optional cache of index structures that depend on the sparsity only
            (shared by every Jacobian of one model, point set and parameter list).
    """

    points: Tensor
    rot_point: Tensor
    rot_col: Tensor
    rot: Tensor
    dense_col: Tensor
    dense: Tensor
    num_params: int
    plan: Optional[dict] = None

    def to_dense(self) -> Tensor:
        """(B, N, 3, P) dense Jacobian."""
        B, N = self.points.shape[:2]
        D = self.points.new_zeros(B, N, 3, self.num_params)
        D[..., self.dense_col] = self.dense
        if self.rot_point.numel():
            cols = (self.rot_col[:, None] + torch.arange(3, device=D.device)).flatten()
            rows = self.rot_point[:, None].expand(-1, 3).flatten()
            D[:, rows, :, cols] = self.rot.permute(1, 3, 0, 2).reshape(-1, B, 3)
        return D

    def normal_equations(self, info: Tensor, grad: Tensor, dtype: torch.dtype = None,
                         reduce: Optional[Tuple[Tensor, int]] = None,
                         upper_only: bool = False,
                         packed: Optional[Tuple[Tensor, int]] = None) -> Tuple[Tensor, Tensor]:
        """``H = D^T blockdiag(info) D`` (B, P, P) and ``g = D^T grad`` (B, P).

        Built block by block: only (point, joint) pairs that share a point contribute
        to the rotation blocks, a few per point in a deep tree, so the cost is far below
        the dense product's. The index structure (which blocks meet, where they land in
        ``H``, in ascending order so the scatter runs through ``H`` once) depends on the
        sparsity only and is cached in :attr:`plan` (shared by the Jacobians of one
        model, point set and parameter list).

        Args:
            info: (B, N, 3, 3) per-point information matrices (``sum A^T A``), read
                coordinate-major and sample-last: no copy when they are a view of
                (3, 3, N, B) storage (as :meth:`LeastSquaresProblem.linearize` builds them).
            grad: (B, N, 3) per-point gradients (``sum A^T r``), likewise of (3, N, B).
            dtype: precision of ``H`` (default: the Jacobian's).
            reduce: optional ``(group (B,) long, G)``: ``H`` summed over each group's
                samples, (G, P, P), built from the summed blocks without the (B, P, P)
                per-sample matrices (parameters shared by a group's samples only).
            upper_only: fill only what a reader of the upper triangle needs (the rotation
                blocks below the diagonal are left 0; :func:`smilfit.ops.cholesky.cholesky`
                reads nothing else): one scatter of the block products instead of two.
            packed: optional ``(slot map (P * P,) long, width)``: ``H`` (B, width) holds
                the upper triangle packed, entry ``row * P + col`` in slot
                ``map[row * P + col]`` (entries mapped to the last slot are dropped
                there), e.g. :meth:`smilfit.ops.sparse_cholesky.SparseCholeskyPlan.slot_map`:
                no (B, P, P) matrices at all.
        """
        B, N = self.points.shape[:2]
        P = self.num_params
        dtype = dtype or self.dense.dtype
        device = self.dense.device
        plan = self.plan.get(('normal', dtype)) if self.plan is not None else None
        if plan is None:
            plan = _NormalPlan.build(self.rot_point, self.rot_col, self.dense_col, P)
            if self.plan is not None:
                self.plan[('normal', dtype)] = plan
        info = info.to(dtype).permute(2, 3, 1, 0).contiguous()   # (3c, 3d, N, B)
        grad_t = grad.permute(2, 1, 0).contiguous()                  # (3c, N, B)
        rot, dense = self.rot.to(dtype), self.dense.to(dtype)

        rows = B if reduce is None else int(reduce[1])
        if packed is not None:
            rr_at, cross_at, dd_at = plan.packed_indices(packed[0])
            width = packed[1]
        else:
            rr_at, cross_at, dd_at = ((plan.rr_upper, plan.cross_upper, plan.dd_flat)
                                      if upper_only else (None, None, plan.dd_flat))
            width = P * P
        # Built sample-last, (width, B): the blocks are gathered and scattered as whole
        # rows of B values (memory copies) instead of B-strided single values, which on
        # the CPU costs several times as much; one transpose at the end.
        if reduce is None:
            def summed(values: Tensor) -> Tensor:
                return values
        else:   # (k, B) -> (k, G): each group's sum, one product with its indicator
            onehot = torch.zeros(B, rows, dtype=dtype, device=device)
            onehot[torch.arange(B, device=device), reduce[0]] = 1.0

            def summed(values: Tensor) -> Tensor:
                return values @ onehot
        Ht = torch.zeros(width, rows, dtype=dtype, device=device)
        gt = torch.zeros(P, B, dtype=grad.dtype, device=device)
        E, Pd = self.rot_point.numel(), self.dense_col.numel()
        if E:
            # A_e = I_i d_e, then d_e1^T A_e2 for the pairs of blocks on one point
            # (e1 <= e2), scattered to their place in H and mirrored. Each of these many
            # 3 x 3 products is three wide multiply-adds over the samples: as batched
            # matmuls of 3 x 3 matrices they cost about 3x as much on the CPU. All
            # component-major, (3, 3, blocks, B): gathers copy whole rows.
            Q = plan.e1.numel()
            r = rot.permute(2, 3, 1, 0).contiguous()    # (3c, 3a, E, B); no copy for
            #                                             the layout sparse() gives
            Ie = info.index_select(2, plan.i_e)                          # (3c, 3d, E, B)
            A = Ie[:, 0, None] * r[0, None]                              # (3c, 3a, E, B)
            A.addcmul_(Ie[:, 1, None], r[1, None])
            A.addcmul_(Ie[:, 2, None], r[2, None])
            r1 = r.index_select(2, plan.e1)                              # (3c, 3a, Q, B)
            A2 = A.index_select(2, plan.e2)                              # (3c, 3b, Q, B)
            block = r1[0, :, None] * A2[0, None]                         # (3a, 3b, Q, B)
            block.addcmul_(r1[1, :, None], A2[1, None])
            block.addcmul_(r1[2, :, None], A2[2, None])
            block = summed(block.view(9 * Q, B))
            if rr_at is not None:
                Ht.index_add_(0, rr_at, block)
            else:
                Ht.index_add_(0, plan.rr_flat, block)
                Ht.index_add_(0, plan.rr_mirror,
                              block.view(3, 3, Q, rows)[:, :, plan.num_diag:].reshape(-1, rows))
            rg = r if grad.dtype == dtype else self.rot.to(grad.dtype).permute(2, 3, 1, 0)
            ge = grad_t.index_select(1, plan.i_e)                        # (3c, E, B)
            g_rot = rg[0] * ge[0, None]                                  # (3a, E, B)
            g_rot.addcmul_(rg[1], ge[1, None])
            g_rot.addcmul_(rg[2], ge[2, None])
            gt.index_add_(0, plan.rot_cols, g_rot.reshape(3 * E, B))
        if Pd:
            # The dense columns against themselves, summed over the points, and against
            # each rotation block (Pd x 3a per block, I_i D_i against d_e, the same
            # multiply-adds), scattered to both triangles or the upper.
            dt = dense.permute(2, 3, 1, 0).contiguous()                  # (3d, Pd, N, B)
            Id = info[:, 0, None] * dt[0, None]                          # (3c, Pd, N, B)
            Id.addcmul_(info[:, 1, None], dt[1, None])
            Id.addcmul_(info[:, 2, None], dt[2, None])
            dd = torch.bmm(dt.permute(3, 1, 0, 2).reshape(B, Pd, 3 * N),
                           Id.permute(3, 0, 2, 1).reshape(B, 3 * N, Pd))  # (B, Pd, Pd)
            Ht.index_add_(0, dd_at, summed(dd.reshape(B, Pd * Pd).T))
            if E:
                Ide = Id.index_select(2, plan.i_e)                       # (3c, Pd, E, B)
                # against r (3c, 3a, E, B) -> (Pd, 3a, E, B)
                cross = Ide[0, :, None] * r[0, None]
                cross.addcmul_(Ide[1, :, None], r[1, None])
                cross.addcmul_(Ide[2, :, None], r[2, None])
                cross = summed(cross.view(E * Pd * 3, B))
                if cross_at is not None:
                    Ht.index_add_(0, cross_at, cross)
                else:
                    Ht.index_add_(0, plan.cross_flat, cross)
                    Ht.index_add_(0, plan.cross_mirror, cross)
            gd = dt if grad.dtype == dtype else self.dense.to(grad.dtype).permute(2, 3, 1, 0)
            gt.index_add_(0, self.dense_col, (gd * grad_t[:, None]).sum((0, 2)))
        g = gt.T.contiguous()
        if packed is not None:
            # a (B, width) view: the factorisation's copy into its working storage does
            # the transposition (one pass over H instead of two)
            return Ht.T, g
        return Ht.T.contiguous().view(rows, P, P), g


@dataclass
class _NormalPlan:
    """Index structure of :meth:`SparsePointJacobian.normal_equations` (fixed by the
    sparsity): which blocks meet and the flat positions of their products."""

    i_e: Tensor         # (E,) point of each block
    rot_cols: Tensor    # (3 * E,) columns of the blocks, (axis, block) order
    e1: Tensor          # (Q,) pairs of blocks on one point, e1 <= e2, the E diagonal
    e2: Tensor          # (Q,) pairs first, each part sorted by place in H
    num_diag: int       # E
    # Places in H (row * P + col), in the order the products come (component-major):
    rr_flat: Tensor     # (9 * Q,) of d_e1^T I d_e2, (axis a, axis b, pair) order
    rr_mirror: Tensor   # (9 * (Q - E),) its transpose's, off-diagonal pairs
    rr_upper: Tensor    # (9 * Q,) of the two places, the one in the upper triangle
    dd_flat: Tensor     # (Pd * Pd,) the dense x dense block's places in H
    cross_flat: Tensor  # (Pd * 3 * E,) of (dense column p, block column a of block e)
    cross_mirror: Tensor  # (Pd * 3 * E,) its transpose's place
    cross_upper: Tensor   # (Pd * 3 * E,) of the two places, the one in the upper triangle
    # the last packed layout's slot map and the places above in it (see packed_indices)
    _packed: Optional[Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]] = None

    def packed_indices(self, slots: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``rr_upper``, ``cross_upper`` and ``dd_flat`` through the slot map ``slots``
        (P * P,) (cached for the last map: a stage uses one)."""
        if self._packed is None or self._packed[0] is not slots:
            self._packed = (slots, (slots[self.rr_upper], slots[self.cross_upper],
                                    slots[self.dd_flat]))
        return self._packed[1]

    @classmethod
    def build(cls, rot_point: Tensor, rot_col: Tensor, dense_col: Tensor, P: int
              ) -> '_NormalPlan':
        device = rot_point.device
        axes = torch.arange(3, device=device)
        cols = rot_col[:, None] + axes                              # (E, 3)
        same = rot_point[:, None] == rot_point[None, :]
        E = rot_point.numel()
        e = torch.arange(E, device=device)
        diag = torch.argsort(rot_col * (P + 1), stable=True)
        o1, o2 = torch.nonzero(same & (e[:, None] < e[None, :]), as_tuple=True)
        o = torch.argsort(rot_col[o1] * P + rot_col[o2], stable=True)
        e1 = torch.cat([e[diag], o1[o]])
        e2 = torch.cat([e[diag], o2[o]])
        off1, off2 = o1[o], o2[o]
        # Positions in the order the products come: (axis a, axis b, pair q) for the
        # block products, (axis a, block e) for the gradient, (dense column p, axis a,
        # block e) for the cross products (component-major, see normal_equations).
        def component_major(x: Tensor) -> Tensor:   # (n, ...) -> (...) x n, flat
            return x.reshape(x.shape[0], math.prod(x.shape[1:])).T.flatten()
        rr = cols[e1][:, :, None] * P + cols[e2][:, None, :]             # (Q, 3a, 3b)
        mirror = cols[off2][:, None, :] * P + cols[off1][:, :, None]     # (Q - E, 3a, 3b)
        # Distinct blocks' column triples never overlap, so each off-diagonal block lies
        # wholly above or wholly below the diagonal.
        above = (rot_col[off1] < rot_col[off2])[:, None, None].expand(-1, 3, 3)
        rr_upper = torch.cat([rr[:E], torch.where(above, rr[E:], mirror)])
        d_rows = dense_col[None, :, None].expand(E, -1, 3)               # (E, Pd, 3a)
        b_cols = cols[:, None, :].expand(-1, dense_col.numel(), -1)
        cross_flat = d_rows * P + b_cols
        cross_mirror = b_cols * P + d_rows
        return cls(i_e=rot_point, rot_cols=component_major(cols), e1=e1, e2=e2, num_diag=E,
                   rr_flat=component_major(rr), rr_mirror=component_major(mirror),
                   rr_upper=component_major(rr_upper),
                   dd_flat=(dense_col[:, None] * P + dense_col[None, :]).flatten(),
                   cross_flat=component_major(cross_flat),
                   cross_mirror=component_major(cross_mirror),
                   cross_upper=component_major(torch.where(d_rows < b_cols, cross_flat,
                                                           cross_mirror)))


def point_jacobians(model, params: Mapping[str, Tensor], fitted: Sequence[str]
                    ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Points (B, N, 3) and ``{name: (B, N, 3, D_name)}`` (see :class:`PointJacobian`)."""
    points, D = PointJacobian(model)(params, fitted)
    J = model.num_joints
    betas = params.get('betas')
    sizes = dict(global_orient=3, transl=3, body_pose=(J - 1) * 3,
                 betas=0 if betas is None else betas.shape[1], global_log_scale=1)
    parts = torch.split(D, [sizes[n] for n in fitted], dim=-1)
    return points, dict(zip(fitted, parts))


#: Parameters whose Jacobian is stored as 3-column blocks per (point, joint) pair.
_BLOCK_PARAMS = ('global_orient', 'body_pose', 'bone_trans', 'keypoint_offsets')


def _num_offset_rows(params: Mapping[str, Tensor], fitted: Sequence[str]) -> int:
    """Rows of ``params['keypoint_offsets']`` (0 when not fitted)."""
    if 'keypoint_offsets' not in fitted:
        return 0
    value = params.get('keypoint_offsets')
    if value is None:
        raise UnsupportedJacobian('fitting keypoint_offsets needs params["keypoint_offsets"]')
    return int(value.shape[-2])


def _offset_blocks(st: '_TermStructure', M: Tensor, attach: Optional[Tensor],
                   offset_rows: Optional[Tensor], pool_joints: Tensor, first: int
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """``keypoint_offsets`` blocks: attached point ``N + x``, first column
    ``first + 3 row_x`` and (B, X', 3, 3) ``M_j`` of its carrying joint."""
    if attach is None or offset_rows is None or not attach.numel():
        raise UnsupportedJacobian('fitting keypoint_offsets needs joint-frame offsets '
                                  "(a keypoint handler with offsets_frame='joint')")
    keep = offset_rows >= 0
    x = torch.nonzero(keep).flatten()
    carriers = pool_joints[attach[x]]
    point = st.num_points - attach.numel() + x
    return point, first + 3 * offset_rows[x], M[:, carriers]


def _rest_joints(model, betas, B: int) -> Tensor:
    rest = model.rest_joints.expand(B, -1, -1)
    if betas is not None and betas.shape[1]:
        rest = rest + torch.einsum('jck,bk->bjc', model.rest_joint_dirs[..., :betas.shape[1]],
                                   betas)
    return rest


def _joint_axis_angles(model, inputs: Mapping[str, Tensor], B: int, dtype, device) -> Tensor:
    """(B, J, 3) axis-angle of every joint in joint order (zeros where not given)."""
    J = model.num_joints
    root = inputs.get('global_orient')
    body = inputs.get('body_pose')
    root = torch.zeros(B, 1, 3, dtype=dtype, device=device) if root is None else root[:, None]
    body = torch.zeros(B, J - 1, 3, dtype=dtype, device=device) if body is None else body
    return torch.cat([root.to(dtype), body.to(dtype)], dim=1).index_select(
        1, model.pose_perm.to(device))


__all__ = ['JACOBIAN_PARAMS', 'UnsupportedJacobian', 'PointJacobian', 'SparsePointJacobian',
           'so3_left_jacobian', 'so3_left_jacobian_components',
           'subtree_matrix', 'point_jacobians', 'check_supported']
