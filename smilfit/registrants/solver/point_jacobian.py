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

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from smilfit.body_models.lbs import shaped_rest_joints
from smilfit.body_models.rotations import skew
from .kinematic_terms import (TermStructure, joint_axis_angles, readout_parts,
                              so3_left_jacobian, so3_left_jacobian_components, subtree_matrix)
from .sparse_jacobian import SparsePointJacobian

Tensor = torch.Tensor


#: Parameters whose point Jacobians are available in closed form.
JACOBIAN_PARAMS = ('global_orient', 'body_pose', 'transl', 'betas', 'global_log_scale',
                   'bone_trans', 'keypoint_offsets')


class UnsupportedJacobian(ValueError):
    """The closed-form Jacobian does not cover this model or parameter."""


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
        m0, ms, mass = readout_parts(model, model.num_betas)
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
        self.base = TermStructure.build(
            model, self.sub, torch.cat(rows_i), torch.cat(rows_k), torch.cat(m0_u),
            torch.cat(ms_u), torch.cat(mass_u), self.num_points, num_offset_terms=0)
        self._attached: Dict[Tuple[int, ...], TermStructure] = {}
        self._pairs: Dict[tuple, Dict[str, Tensor]] = {}
        self._plans: Dict[tuple, dict] = {}
        self._betas_maps: Dict[tuple, Tuple[Tensor, Tensor]] = {}

    def _structure(self, attach: Optional[Tensor], keep: Optional[Tensor] = None
                   ) -> TermStructure:
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
            self._attached[key] = TermStructure.build(
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
        rest = shaped_rest_joints(model.rest_joints, model.rest_joint_dirs, betas, B)
        t_maps = world[..., :3, 3] - (M @ rest[..., None]).squeeze(-1)
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
            angles = joint_axis_angles(model, inputs, B, dtype, device)
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


    def _rotation_pairs(self, st: TermStructure, fitted: Sequence[str],
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

    def _betas_map(self, st: TermStructure, K: int, dtype, device
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
            dirs = model.rest_joint_dirs[..., :K].to('cpu', torch.float64)     # (J, 3, K)
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

    def _bone_blocks(self, st: TermStructure, M: Tensor, first: int
                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """``bone_trans`` blocks: point, first column and (B, E, 3, 3) ``mu_im M_p(m)`` of
        every (point, non-root joint) pair with mass below the joint."""
        keep = (st.pair_joint != self.root) & (st.pair_mass != 0)
        joint = st.pair_joint[keep]
        block = st.pair_mass[keep][:, None, None] * M[:, self.parents[joint]]
        if self.model.reference_compat:  # the reference negates y of bone translations
            block = block * torch.tensor([1.0, -1.0, 1.0], dtype=M.dtype, device=M.device)
        return st.pair_point[keep], first + 3 * joint, block


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


def _offset_blocks(st: TermStructure, M: Tensor, attach: Optional[Tensor],
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




__all__ = ['JACOBIAN_PARAMS', 'UnsupportedJacobian', 'PointJacobian', 'point_jacobians',
           'check_supported']
