"""Linear blend skinning as short, typed, pure functions (no assumptions about the skeleton).

Shapes: B batch, V vertices, J joints, K shape coefficients, P pose-blendshape basis
size (9 * (J - 1) or 0), R readout rows (regressed joints and vertex keypoints).

The kinematic chain is evaluated one tree *level* at a time (all joints of one depth
in one batched matmul), not one joint at a time. Per-joint anisotropic scale and
bone translation follow SMILify's conventions (see :func:`local_transforms`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


# --------------------------------------------------------------------- topology
@dataclass(frozen=True)
class KinematicLevels:
    """A kinematic tree split into depth levels, precomputed once per model.

    Attributes:
        root: index of the root joint.
        joints: per level >= 1, the (n_l,) joint indices at that depth.
        parent_pos: per level >= 1, for each of its joints, the position of its
            parent inside the previous level's joint list.
        order: (J,) all joints in level order (root first).
        inverse_order: (J,) position of each joint in ``order``.
        non_root: (J - 1,) joint indices except the root, ascending (the order of
            ``body_pose`` and of the pose-blendshape feature).
    """

    root: int
    joints: Tuple[torch.Tensor, ...]
    parent_pos: Tuple[torch.Tensor, ...]
    order: torch.Tensor
    inverse_order: torch.Tensor
    non_root: torch.Tensor

    @staticmethod
    def from_parents(parents: np.ndarray) -> 'KinematicLevels':
        """Build levels from a validated (J,) parent array (root has parent -1)."""
        parents = np.asarray(parents, dtype=np.int64)
        J = parents.shape[0]
        root = int(np.flatnonzero(parents < 0)[0])
        levels: List[np.ndarray] = [np.array([root])]
        seen = 1
        while seen < J:
            children = np.flatnonzero(np.isin(parents, levels[-1]))
            if children.size == 0:
                raise ValueError('parents do not form a tree reachable from the root')
            levels.append(children)
            seen += children.size
        joints, parent_pos = [], []
        for prev, cur in zip(levels[:-1], levels[1:]):
            position = {int(j): i for i, j in enumerate(prev)}
            joints.append(torch.as_tensor(cur))
            parent_pos.append(torch.as_tensor([position[int(parents[j])] for j in cur]))
        order = np.concatenate(levels)
        inverse = np.empty(J, dtype=np.int64)
        inverse[order] = np.arange(J)
        return KinematicLevels(
            root=root, joints=tuple(joints), parent_pos=tuple(parent_pos),
            order=torch.as_tensor(order), inverse_order=torch.as_tensor(inverse),
            non_root=torch.as_tensor(np.delete(np.arange(J), root)))

    def to(self, device: torch.device) -> 'KinematicLevels':
        move = lambda ts: tuple(t.to(device) for t in ts)  # noqa: E731
        return KinematicLevels(self.root, move(self.joints), move(self.parent_pos),
                               self.order.to(device), self.inverse_order.to(device),
                               self.non_root.to(device))


# ------------------------------------------------------------------ shape terms
def pose_feature(rot_mats: torch.Tensor, non_root: torch.Tensor) -> torch.Tensor:
    """(B, J, 3, 3) local rotations -> (B, 9 * (J - 1)) SMPL pose feature ``R - I``."""
    R = rot_mats[:, non_root]
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return (R - eye).flatten(1)


def pca_joint_scale_trans(weights_scale: Optional[torch.Tensor],
                          weights_trans: Optional[torch.Tensor],
                          scaledirs: Optional[torch.Tensor],
                          transdirs: Optional[torch.Tensor],
                          trans_factor: float,
                          min_scale: float = 1e-4,
                          ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """PCA drivers of per-joint scale and bone translation (SMILify's convention).

    ``scale = clamp(1 + sum_k w_k scaledirs[k], min_scale)`` and
    ``translation = trans_factor * sum_k w_k transdirs[k]``.

    Args:
        weights_scale: (B, K') or ``None``.
        weights_trans: (B, K') or ``None``.
        scaledirs, transdirs: (K', J, 3) directions.

    Returns:
        ``(log_scale, bone_trans)``, each (B, J, 3) or ``None``.
    """
    log_scale = bone_trans = None
    if weights_scale is not None:
        scale = 1.0 + torch.einsum('bk,kjc->bjc', weights_scale, scaledirs)
        log_scale = scale.clamp_min(min_scale).log()
    if weights_trans is not None:
        bone_trans = trans_factor * torch.einsum('bk,kjc->bjc', weights_trans, transdirs)
    return log_scale, bone_trans


# ------------------------------------------------------------- kinematic chain
def shaped_rest_joints(rest_joints: torch.Tensor, rest_joint_dirs: torch.Tensor,
                       betas: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """(B, J, 3) rest joints of shape coefficients ``betas`` (B, K') (``None``: the
    template's), from the template's (J, 3) and their shape directions (J, 3, K >= K')."""
    rest = rest_joints.expand(batch, -1, -1)
    if betas is not None and betas.shape[1]:
        rest = rest + torch.einsum('jck,bk->bjc', rest_joint_dirs[..., :betas.shape[1]], betas)
    return rest


def scale_world(world: torch.Tensor, global_log_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """World transforms (B, J, 4, 4) scaled uniformly about the origin by
    ``exp(global_log_scale)`` (B, 1) (``None``: unchanged)."""
    if global_log_scale is None:
        return world
    scale = global_log_scale.exp()[:, :, None, None]         # (B, 1, 1, 1)
    return torch.cat([world[..., :3, :] * scale, world[..., 3:, :]], dim=-2)


def local_transforms(rot_mats: torch.Tensor, rest_joints: torch.Tensor,
                     parents: torch.Tensor, root: int,
                     log_scale: Optional[torch.Tensor] = None,
                     bone_trans: Optional[torch.Tensor] = None,
                     propagate_scaling: bool = False,
                     reference_compat: bool = False) -> torch.Tensor:
    """Per-joint transforms relative to the parent, as (B, J, 4, 4).

    For joint ``j`` with parent ``p`` and ``S = diag(exp(log_scale))``:
    ``L_j = [R'_j | (J_j - J_p) + d_j]`` with ``R'_j = S_p^-1 R_j S_j`` (the scale of
    ``j`` stays local to ``j``'s segment) or ``R'_j = R_j S_j`` when
    ``propagate_scaling`` (scales compound down the chain). The root gets
    ``[R_0 S_0 | J_0]``; global rotation therefore pivots about the root joint.

    ``reference_compat`` reproduces SMILify exactly, defects included: the root's
    own scale is never applied (yet its inverse still shrinks its children when not
    propagating) and ``d_j`` has its y component negated.

    Args:
        rot_mats: (B, J, 3, 3) local joint rotations.
        rest_joints: (B, J, 3) or (J, 3) rest-pose joint locations.
        parents: (J,) long tensor of parent indices (root entry ignored).
        root: the root joint index.
        log_scale: (B, J, 3) per-joint, per-axis log scale, or ``None``.
        bone_trans: (B, J, 3) per-joint offset added to the bone vector, or ``None``.
    """
    B, J = rot_mats.shape[:2]
    dtype, device = rot_mats.dtype, rot_mats.device
    if rest_joints.dim() == 2:
        rest_joints = rest_joints.expand(B, J, 3)
    safe_parents = parents.clamp_min(0)
    offsets = rest_joints - rest_joints[:, safe_parents]
    offsets = torch.cat([offsets[:, :root], rest_joints[:, root:root + 1],
                         offsets[:, root + 1:]], dim=1)
    if bone_trans is not None:
        if reference_compat:
            bone_trans = bone_trans * torch.tensor([1.0, -1.0, 1.0], dtype=dtype,
                                                   device=device)
        root_mask = torch.ones(J, 1, dtype=dtype, device=device)
        root_mask[root] = 0.0
        offsets = offsets + bone_trans * root_mask
    R = rot_mats
    if log_scale is not None:
        scale = log_scale.exp()
        own = scale
        if reference_compat:  # the reference never applies the root's own scale
            own = torch.cat([scale[:, :root], torch.ones_like(scale[:, :1]),
                             scale[:, root + 1:]], dim=1)
        # R S_j scales the columns of R; S_p^-1 R scales its rows.
        R = R * own[:, :, None, :]
        if not propagate_scaling:
            inv_parent = (-log_scale).exp()[:, safe_parents]
            inv_parent = torch.cat([inv_parent[:, :root], torch.ones_like(inv_parent[:, :1]),
                                    inv_parent[:, root + 1:]], dim=1)
            R = inv_parent[:, :, :, None] * R
    top = torch.cat([R, offsets[..., None]], dim=-1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=device).expand(B, J, 1, 4)
    return torch.cat([top, bottom], dim=-2)


def _untracked(t: torch.Tensor) -> bool:
    """Whether nothing differentiates through ``t``: no autograd graph, no function
    transform (vmap, jvp) and no forward-mode tangent, so ``out=`` writes are safe."""
    # (a torch without this private query: assume a transform may be active)
    transforms_active = getattr(torch._C, '_are_functorch_transforms_active', lambda: True)
    return (not (torch.is_grad_enabled() and t.requires_grad)
            and not transforms_active()
            and torch.autograd.forward_ad.unpack_dual(t).tangent is None)


def chain_transforms(local: torch.Tensor, levels: KinematicLevels) -> torch.Tensor:
    """Compose (B, J, 4, 4) parent-relative transforms into world transforms, level by level."""
    if _untracked(local):
        # Without autograd: joint-major in level order, every level's products written
        # straight into their contiguous rows (no per-level gathers of ``local``, no cat).
        ordered = local.transpose(0, 1).index_select(0, levels.order)    # (J, B, 4, 4)
        world = torch.empty_like(ordered)
        world[0] = ordered[0]
        prev, start = 0, 1
        for joints, parent_pos in zip(levels.joints, levels.parent_pos):
            end = start + joints.numel()
            torch.matmul(world[prev:start].index_select(0, parent_pos), ordered[start:end],
                         out=world[start:end])
            prev, start = start, end
        return world.transpose(0, 1).index_select(1, levels.inverse_order)
    current = local[:, levels.root:levels.root + 1]
    per_level = [current]
    for joints, parent_pos in zip(levels.joints, levels.parent_pos):
        current = current[:, parent_pos] @ local[:, joints]
        per_level.append(current)
    return torch.cat(per_level, dim=1)[:, levels.inverse_order]


def skinning_transforms(world: torch.Tensor, rest_joints: torch.Tensor) -> torch.Tensor:
    """World joint transforms -> (B, J, 3, 4) affine maps of rest-pose points.

    ``A_j x = R(G_j) (x - J_j) + t(G_j)``: how much the bone moved, not where it is.
    """
    if rest_joints.dim() == 2:
        rest_joints = rest_joints.expand(world.shape[0], -1, -1)
    rot = world[..., :3, :3]
    t = world[..., :3, 3] - (rot @ rest_joints[..., None]).squeeze(-1)
    return torch.cat([rot, t[..., None]], dim=-1)


# ------------------------------------------------------------------- skinning
def rest_vertices_vb(v_template: torch.Tensor, shapedirs: torch.Tensor,
                     betas: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """Shaped rest vertices in vertex-major layout (V, 3, B).

    Vertex-major layout lets :func:`skin_vertices_vb` read each vertex's B samples
    contiguously; the blendshapes are one fused ``addmm``.

    Args:
        v_template: (V, 3); shapedirs: (V, 3, K'); betas: (B, K') or ``None``.
        batch: B (used when there are no betas).
    """
    V = v_template.shape[0]
    flat = v_template.reshape(V * 3, 1)
    if betas is not None and betas.shape[1]:
        return torch.addmm(flat, shapedirs.reshape(V * 3, -1), betas.T).view(V, 3, -1)
    return flat.expand(V * 3, batch).view(V, 3, batch)


@dataclass(frozen=True)
class SkinningChunk:
    """A contiguous vertex range and the only joints that influence it.

    Attributes:
        start, stop: the vertex range ``[start, stop)``.
        joints: (J_c,) indices of the joints with non-zero weight in the range.
        weights: (stop - start, J_c) the weights restricted to those joints.
    """

    start: int
    stop: int
    joints: torch.Tensor
    weights: torch.Tensor


def plan_skinning(weights: torch.Tensor, chunk_size: int) -> Tuple[SkinningChunk, ...]:
    """Split (V, J) weights into vertex chunks restricted to the joints they use.

    Meshes list vertices in spatially coherent order, so a few hundred consecutive
    vertices depend on a handful of joints: restricting each chunk's blend to those
    joints makes skinning cost scale with the weights' sparsity, not with J.
    """
    chunks = []
    for start in range(0, weights.shape[0], chunk_size):
        w = weights[start:start + chunk_size]
        joints = torch.nonzero(w.abs().sum(0) > 0).flatten()
        chunks.append(SkinningChunk(start, start + w.shape[0], joints, w[:, joints]))
    return tuple(chunks)


def skin_vertices_vb(rest: torch.Tensor, plan: Sequence[SkinningChunk],
                     transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: (V, 3, B) rest vertices -> (B, V, 3) posed vertices.

    Per chunk of :func:`plan_skinning`, blends the (B, J_c, 3, 4) maps of the joints
    the chunk uses with one GEMM, ``(n, J_c) @ (J_c, B*12)``, and applies them with
    three fused multiply-adds. Chunks keep the blended maps in cache: on CPU this
    step is memory-bound, and whole-mesh temporaries are several times slower.

    Args:
        rest: (V, 3, B) vertices, e.g. from :func:`rest_vertices_vb`.
        plan: chunks covering ``[0, V)`` in order.
        transforms: (B, J, 3, 4) skinning maps (see :func:`skinning_transforms`).

    Returns:
        (B, V, 3) vertices (a permuted view of a vertex-major tensor).
    """
    B, J = transforms.shape[:2]
    # Columns layout (J, B, 4, 3): blended[..., k, :] is column k of the 3x4 map.
    columns = transforms.permute(1, 0, 3, 2).reshape(J, B * 12)
    out = []
    for chunk in plan:
        x = rest[chunk.start:chunk.stop]
        used = columns if chunk.joints.numel() == J else columns[chunk.joints]
        blended = (chunk.weights @ used).view(-1, B, 4, 3)
        v = torch.addcmul(blended[:, :, 3], blended[:, :, 0], x[:, 0, :, None])
        v = v.addcmul_(blended[:, :, 1], x[:, 1, :, None])
        out.append(v.addcmul_(blended[:, :, 2], x[:, 2, :, None]))
    return (out[0] if len(out) == 1 else torch.cat(out)).permute(1, 0, 2)


def skinning_chunk_size(num_vertices: int, batch: int, itemsize: int,
                        cache_bytes: int = 1 << 20, min_chunk: int = 128) -> int:
    """Vertices per chunk so that one chunk's (n, B, 12) blended maps fit ``cache_bytes``.

    Rounded to a power of two so that few distinct plans are ever built.
    """
    n = max(min_chunk, cache_bytes // (batch * 12 * itemsize))
    n = 1 << (n.bit_length() - 1)
    return min(n, num_vertices)


@dataclass(frozen=True)
class FactoredChunk:
    """A vertex range with its joints and static shape-factored skinning coefficients.

    Attributes:
        start, stop: the vertex range ``[start, stop)``.
        joints: (J_c,) joints with non-zero weight in the range.
        coefficients: (n, (K + 1) * J_c * 3 + J_c): per vertex, ``w_vj * x_vkd`` for
            ``x_v0 = v_template_v`` and ``x_vk = shapedirs_v[:, k-1]``, then ``w_vj``.
    """

    start: int
    stop: int
    joints: torch.Tensor
    coefficients: torch.Tensor


def plan_factored_skinning(weights: torch.Tensor, v_template: torch.Tensor,
                           shapedirs: torch.Tensor,
                           chunk_size: int) -> Tuple[FactoredChunk, ...]:
    """Precompute :func:`skin_shape_factored` coefficients per vertex chunk.

    Args:
        weights: (V, J); v_template: (V, 3); shapedirs: (V, 3, K).
    """
    chunks = []
    for part in plan_skinning(weights, chunk_size):
        base = torch.cat([v_template[part.start:part.stop, None, :],
                          shapedirs[part.start:part.stop].permute(0, 2, 1)], dim=1)
        n, Jc = part.weights.shape
        coef = (base[:, :, None, :] * part.weights[:, None, :, None]).reshape(n, -1)
        chunks.append(FactoredChunk(part.start, part.stop, part.joints,
                                    torch.cat([coef, part.weights], dim=1)))
    return tuple(chunks)


def skin_shape_factored(plan: Sequence[FactoredChunk], transforms: torch.Tensor,
                        betas: torch.Tensor) -> torch.Tensor:
    """LBS of the shaped template without building the shaped or blended vertices.

    With ``x_v = v_template_v + sum_k betas_k shapedirs_vk`` (no pose blendshapes),
    ``sum_j w_vj (R_j x_v + t_j)`` is linear in per-sample features ``[R_j,
    betas_k R_j, t_j]`` with static per-vertex coefficients, so each chunk is one
    GEMM that writes its vertices directly. Faster than :func:`skin_vertices_vb`
    from batches of about 16 up; slower for single samples.

    Args:
        plan: from :func:`plan_factored_skinning` (K shape directions).
        transforms: (B, J, 3, 4) skinning maps.
        betas: (B, K) (zero-padded when fewer are in use).

    Returns:
        (B, V, 3) vertices (a permuted view of a vertex-major tensor).
    """
    B = transforms.shape[0]
    coef = torch.cat([betas.new_ones(B, 1), betas], dim=1)  # (B, K + 1); K may be 0
    rot, t = transforms[..., :3], transforms[..., 3]
    out = []
    for chunk in plan:
        # (K + 1, J_c, d, B, c): feature rows in the order of the coefficients.
        rows = (coef[:, :, None, None, None] * rot[:, None, chunk.joints]).permute(1, 2, 4, 0, 3)
        features = torch.cat([rows.reshape(-1, B * 3),
                              t[:, chunk.joints].permute(1, 0, 2).reshape(-1, B * 3)])
        out.append(chunk.coefficients @ features)
    return (out[0] if len(out) == 1 else torch.cat(out)).view(-1, B, 3).permute(1, 0, 2)


def skin_points(points: torch.Tensor, weights: torch.Tensor,
                transforms: torch.Tensor) -> torch.Tensor:
    """Skin (B, N, 3) points with (N, J) weights and (B, J, 3, 4) maps -> (B, N, 3)."""
    B, N = points.shape[:2]
    plan = plan_skinning(weights, skinning_chunk_size(N, B, points.element_size()))
    return skin_vertices_vb(points.permute(1, 2, 0), plan, transforms)


def readout_matrix(moment: torch.Tensor, moment_shape: torch.Tensor,
                   mass: torch.Tensor) -> torch.Tensor:
    """Stack readout moments into the (J*3 + J*3*K + J, R) matrix :func:`readout_posed` uses.

    Args:
        moment: (R, J, 3); moment_shape: (R, J, 3, K); mass: (R, J).
    """
    R, J, _, K = moment_shape.shape
    return torch.cat([moment.reshape(R, J * 3), moment_shape.reshape(R, J * 3 * K), mass],
                     dim=1).T


def readout_posed(transforms: torch.Tensor, matrix: torch.Tensor,
                  betas: Optional[torch.Tensor] = None,
                  moment_pose: Optional[torch.Tensor] = None,
                  pose_feat: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Linear readouts of skinned vertices without skinning them.

    A readout row ``r`` (a joint-regressor row or a keypoint's vertex weights) of the
    skinned mesh is ``sum_i r_i sum_j w_ij A_j [v_i; 1] = sum_j A_j [m_j; c_j]`` with
    the *moment* ``m_j = sum_i r_i w_ij v_i`` (linear in the shape and pose
    blendshape coefficients) and the *mass* ``c_j = sum_i r_i w_ij``: cost O(R J),
    independent of the vertex count. All terms are one GEMM of per-sample features
    ``[R_j, R_j (x) betas, t_j]`` with the precomputed :func:`readout_matrix`.

    Args:
        transforms: (B, J, 3, 4) skinning maps.
        matrix: from :func:`readout_matrix` with K' = ``betas.shape[1]`` (0 without).
        betas: (B, K') or ``None``.
        moment_pose: (R, J, 3, P) and pose_feat: (B, P), or ``None``.

    Returns:
        (B, R, 3) read-out points.
    """
    B, J = transforms.shape[:2]
    rot = transforms[..., :3].permute(0, 2, 1, 3)  # (B, c, J, d)
    features = [rot.reshape(B, 3, J * 3)]
    if betas is not None and betas.shape[1]:
        features.append((rot[..., None] * betas[:, None, None, None, :]).reshape(B, 3, -1))
    features.append(transforms[..., 3].transpose(1, 2))  # (B, c, J)
    out = (torch.cat(features, dim=2) @ matrix).transpose(1, 2)
    if pose_feat is not None:
        out = out + readout_pose_term(transforms, moment_pose, pose_feat)
    return out


def readout_terms(moment: torch.Tensor, moment_shape: torch.Tensor, mass: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero (row, joint) terms of readout moments, for :func:`readout_sparse`.

    Args:
        moment: (R, J, 3); moment_shape: (R, J, 3, K); mass: (R, J).

    Returns:
        ``(row (S,), joint (S,), moments (1 + K, S * 4))``: each term's homogeneous
        moment ``[m0; c]`` (row 0) and its shape directions ``[ms_k; 0]`` (rows 1..K),
        flattened term-major.
    """
    used = (mass != 0) | (moment != 0).any(-1) | (moment_shape != 0).any(-1).any(-1)
    row, joint = torch.nonzero(used, as_tuple=True)
    S, K = row.numel(), moment_shape.shape[-1]
    base = torch.cat([moment[row, joint], mass[row, joint, None]], dim=1)       # (S, 4)
    shape = torch.cat([moment_shape[row, joint],
                       moment_shape.new_zeros(S, 1, K)], dim=1)                # (S, 4, K)
    moments = torch.cat([base.reshape(1, S * 4), shape.permute(2, 0, 1).reshape(K, S * 4)])
    return row, joint, moments


def readout_sparse(transforms: torch.Tensor, row: torch.Tensor, joint: torch.Tensor,
                   moments: torch.Tensor, num_rows: int,
                   betas: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`readout_posed` (without pose blendshapes) summed over the non-zero
    (row, joint) terms only: ``sum_s A_joint(s) [m0_s + ms_s betas; c_s]`` per row.

    A joint regressor or a vertex keypoint reads a few joints' skin, so its terms are
    a small fraction of R x J; then this costs O(B S) small products instead of the
    dense readout's O(B R J) (a 55-joint model: 114 terms instead of 3025).

    Args:
        transforms: (B, J, 3, 4) skinning maps.
        row, joint, moments: from :func:`readout_terms`.
        num_rows: R.
        betas: (B, K') with K' <= K, or ``None``.

    Returns:
        (B, R, 3) read-out points.
    """
    B, S = transforms.shape[0], row.numel()
    K = 0 if betas is None else betas.shape[1]
    if K:
        h = torch.addmm(moments[0], betas.to(moments.dtype), moments[1:1 + K])  # (B, S * 4)
    else:
        h = moments[0].expand(B, -1)
    maps = transforms.index_select(1, joint).reshape(B * S, 3, 4)
    terms = torch.bmm(maps, h.reshape(B * S, 4, 1)).view(B, S, 3)
    # (under autocast the product is in bf16/fp16: the sums stay in the maps' precision)
    return transforms.new_zeros(B, num_rows, 3).index_add(1, row, terms.to(transforms.dtype))


def readout_pose_term(transforms: torch.Tensor, moment_pose: torch.Tensor,
                      pose_feat: torch.Tensor) -> torch.Tensor:
    """(B, R, 3) the pose-blendshape part of the readouts (see :func:`readout_posed`):
    transforms (B, J, 3, 4), moment_pose (R, J, 3, P), pose_feat (B, P)."""
    return torch.einsum('bjcd,rjdp,bp->brc', transforms[..., :3], moment_pose, pose_feat)


def readout_moments(rows: np.ndarray, weights: np.ndarray, v_template: np.ndarray,
                     shapedirs: np.ndarray, posedirs: np.ndarray):
    """Precompute readout moments (see :func:`readout_posed`) in float64.

    Args:
        rows: (R, V) readout rows over vertices.
    Returns:
        mass (R, J), moment0 (R, J, 3), moment_shape (R, J, 3, K), moment_pose
        (R, J, 3, P).
    """
    support = np.flatnonzero(np.abs(rows).sum(0) > 0)  # vertices any row touches
    r, w = rows[:, support], weights[support]
    S, K, P = support.size, shapedirs.shape[2], posedirs.shape[2]
    # One (J, S) @ (S, Q) product per row keeps memory at O(J S), not O(R J S).
    values = np.concatenate([v_template[support].reshape(S, 3),
                             shapedirs[support].reshape(S, 3 * K),
                             posedirs[support].reshape(S, 3 * P)], axis=1)
    moments = np.stack([(w * row[:, None]).T @ values for row in r])  # (R, J, 3 + 3K + 3P)
    R, J = r.shape[0], w.shape[1]
    mass = r @ w
    moment0 = moments[..., :3]
    moment_shape = moments[..., 3:3 + 3 * K].reshape(R, J, 3, K)
    moment_pose = moments[..., 3 + 3 * K:].reshape(R, J, 3, P)
    return mass, moment0, moment_shape, moment_pose
