"""Batched Cholesky factorisation of many symmetric positive definite matrices that share
one sparsity pattern (the Levenberg-Marquardt normal equations of a body's samples).

Two columns of a body's ``J^T J`` meet only when some point depends on both: a joint's
rotation meets its ancestors and descendants, not its cousins, so after eliminating the
limbs from the tips inwards the factor has no fill beyond the pattern itself (a tree's
pattern is chordal). The stick insect's (173, 173) system needs about 1/19 of the
dense factorisation's flops that way.

The symbolic analysis (:meth:`SparseCholeskyPlan.build`, once per structure) groups
columns with the same pattern into nodes (a joint's 3 rotation columns; the columns
coupled to everything, such as translation and shape), orders the nodes by minimum
degree, finds the fill and the elimination tree and schedules the nodes by level: the
nodes of one level are never in each other's way, so each level (and node width) is one
batched step over all its nodes and every matrix of the batch, a few tensor operations
however many joints the body has. Only the upper triangle of the input is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor


@dataclass
class _Group:
    """Nodes of one level and width, eliminated in one batched step.

    ``own`` (n, s): each node's columns; ``front`` (n, f + 1): the columns of its later
    neighbours in the factor (padded with the zero column ``P + 1``), then the
    right-hand side ``P``; ``blocks`` (n*s*s + n*s*(f+1),): where the diagonal blocks
    and the blocks right of them are in the working storage; ``ff`` (n*(f+1)^2,): where
    the Schur updates of the front go (the sink for the lower half and the padding)."""

    own: Tensor
    front: Tensor
    blocks: Tensor
    ff: Tensor

    def to(self, device) -> '_Group':
        return _Group(*(getattr(self, k).to(device) for k in ('own', 'front', 'blocks',
                                                                 'ff')))


@dataclass
class SparseCholeskyPlan:
    """The symbolic factorisation of one (P, P) sparsity pattern.

    Attributes:
        size: P.
        gather: (Z,) flat positions (row * P + col, row <= col) of the filled upper
            triangle's entries in a (P, P) matrix: the working storage's first slots;
            the right-hand side follows (``rhs``), then a slot that reads 0 (padding)
            and one that absorbs writes nobody reads.
        diagonal: (P,) the slots of the diagonal entries.
        rhs: (P,) the slots of the right-hand side.
        groups: the elimination steps, in order.
        flops: multiply-adds of the sparse factorisation (per matrix).
        dense_flops: those of the dense one, ``P^3 / 6``.
    """

    size: int
    gather: Tensor
    diagonal: Tensor
    rhs: Tensor
    groups: List[_Group]
    flops: int
    dense_flops: int

    @classmethod
    def build(cls, pattern: Tensor) -> 'SparseCholeskyPlan':
        """The plan for matrices whose entries outside ``pattern`` (P, P) bool (made
        symmetric; the diagonal is always in) are zero."""
        if pattern.dim() != 2 or pattern.shape[0] != pattern.shape[1]:
            raise ValueError(f'pattern must be (P, P), got {tuple(pattern.shape)}')
        pat = pattern.detach().to('cpu', torch.bool)
        P = pat.shape[0]
        pat = pat | pat.T | torch.eye(P, dtype=torch.bool)
        nodes = _column_nodes(pat)
        adjacency = _node_adjacency(pat, nodes)
        order, fronts = _eliminate(adjacency, [len(c) for c in nodes])
        position = {k: i for i, k in enumerate(order)}
        # Elimination tree: a node's parent is the first of its front to be eliminated;
        # a level holds nodes whose descendants were all eliminated before it.
        level: Dict[int, int] = {}
        for k in order:
            level.setdefault(k, 0)
            if fronts[k]:
                parent = min(fronts[k], key=position.__getitem__)
                level[parent] = max(level.get(parent, 0), level[k] + 1)
        # Storage: every filled entry (r <= c) of the upper triangle, flat, then the
        # right-hand side (column P, in every node's front: eliminating a node then
        # also does its part of the forward substitution).
        filled = torch.eye(P, dtype=torch.bool)
        for k in order:
            cols = torch.tensor(nodes[k] + [c for f in fronts[k] for c in nodes[f]])
            filled[cols[:, None], cols[None, :]] = True
        rows, cols = torch.nonzero(torch.triu(filled), as_tuple=True)
        gather = rows * P + cols
        Z = int(gather.numel())
        slot = torch.full((P + 2, P + 2), Z + P + 1, dtype=torch.long)   # the sink
        slot[rows, cols] = torch.arange(Z)
        slot[cols, rows] = torch.arange(Z)
        slot[torch.arange(P), P] = Z + torch.arange(P)      # the right-hand side
        slot[P, torch.arange(P)] = Z + torch.arange(P)
        slot[P + 1, :P + 1] = Z + P                         # the padding reads 0
        slot[:P + 1, P + 1] = Z + P
        groups, flops = [], 0
        buckets: Dict[Tuple[int, int], List[int]] = {}
        for k in order:
            buckets.setdefault((level[k], len(nodes[k])), []).append(k)
        for lev, s in sorted(buckets):
            members = buckets[(lev, s)]
            front_cols = [[c for f in sorted(fronts[k], key=position.__getitem__)
                           for c in nodes[f]] for k in members]
            f = max(len(c) for c in front_cols)
            own = torch.tensor([nodes[k] for k in members], dtype=torch.long)
            front = torch.tensor([c + [P + 1] * (f - len(c)) + [P] for c in front_cols],
                                 dtype=torch.long).reshape(len(members), f + 1)
            kk = slot[own[:, :, None], own[:, None, :]]
            kf = slot[own[:, :, None], front[:, None, :]]
            ff = slot[front[:, :, None], front[:, None, :]].clone()
            # Writes to the lower half, the padding or the rhs's own entry go to the sink.
            lower = front[:, :, None] > front[:, None, :]
            pad = (front[:, :, None] == P + 1) | (front[:, None, :] == P + 1)
            rhs = (front[:, :, None] == P) & (front[:, None, :] == P)
            ff[lower | pad | rhs] = Z + P + 1
            groups.append(_Group(own, front, torch.cat([kk.flatten(), kf.flatten()]),
                                 ff.flatten()))
            flops += sum(s ** 3 // 6 + s * s * len(c) + s * len(c) * (len(c) + 1) // 2
                         for c in front_cols)
        return cls(size=P, gather=gather, diagonal=slot[torch.arange(P), torch.arange(P)],
                   rhs=Z + torch.arange(P), groups=groups, flops=flops,
                   dense_flops=P ** 3 // 6)

    def to(self, device) -> 'SparseCholeskyPlan':
        """The plan with its index tensors on ``device``."""
        return SparseCholeskyPlan(self.size, self.gather.to(device), self.diagonal.to(device),
                                  self.rhs.to(device), [g.to(device) for g in self.groups],
                                  self.flops, self.dense_flops)

    @property
    def packed_size(self) -> int:
        """Width of the packed layout (:meth:`slot_map`): the pattern's filled upper
        triangle, then one slot that absorbs everything else."""
        return int(self.gather.numel()) + 1

    def slot_map(self) -> Tensor:
        """(P * P,) long: where entry ``row * P + col`` of a (P, P) matrix goes in the
        packed layout, (n, :attr:`packed_size`): its slot where ``row <= col`` and the
        entry is in the filled pattern, else the last slot (ignored). Build the
        matrices packed (``index_add_`` through this map) and :meth:`factorize` reads
        them without a (P, P) matrix."""
        P, Z = self.size, int(self.gather.numel())
        slots = torch.full((P * P,), Z, dtype=torch.long, device=self.gather.device)
        slots[self.gather] = torch.arange(Z, device=self.gather.device)
        return slots

    def pack(self, A: Tensor) -> Tensor:
        """(n, P, P) matrices (upper triangle read) -> packed, (n, :attr:`packed_size`)."""
        n, P = A.shape[0], self.size
        packed = A.new_zeros(n, self.packed_size)
        packed[:, :-1] = A.reshape(n, P * P).index_select(1, self.gather)
        return packed

    def unpack(self, packed: Tensor) -> Tensor:
        """Packed matrices (n, :attr:`packed_size`) -> (n, P, P) holding their upper
        triangle (the lower one zero), for a dense factorisation; (n, P, P) matrices
        are returned as they are."""
        n, P, Z = packed.shape[0], self.size, int(self.gather.numel())
        if packed.dim() == 3 and packed.shape[1:] == (P, P):
            return packed
        if packed.dim() != 2 or packed.shape[1] != Z + 1:
            raise ValueError(f'expected (n, {P}, {P}) or packed (n, {Z + 1}) matrices, got '
                             f'{tuple(packed.shape)}')
        dense = packed.new_zeros(n, P * P)
        dense.index_copy_(1, self.gather, packed[:, :Z])
        return dense.view(n, P, P)

    def factorize(self, A: Tensor, diagonal: Optional[Tensor] = None,
                  rhs: Optional[Tensor] = None) -> 'SparseFactorization':
        """Factorise every matrix of ``A`` plus ``diag(diagonal)`` ((n, P), optional),
        leaving ``A`` as it is. ``A`` is (n, P, P) (upper triangle read; entries outside
        the pattern must be zero) or packed, (n, :attr:`packed_size`) (see
        :meth:`slot_map`). ``rhs`` (n, P), optional: a right-hand side whose forward
        substitution is done on the way (:meth:`SparseFactorization.solve` without an
        argument then finishes its solve)."""
        n, P = A.shape[0], self.size
        Z = self.gather.numel()
        work = A.new_zeros(n, Z + P + 2)
        if A.dim() == 2 and A.shape[1] == Z + 1:
            work[:, :Z] = A[:, :Z]
        elif A.dim() == 3 and A.shape[1:] == (P, P):
            work[:, :Z] = A.reshape(n, P * P).index_select(1, self.gather)
        else:
            raise ValueError(f'expected (n, {P}, {P}) or packed (n, {Z + 1}) matrices, got '
                             f'{tuple(A.shape)}')
        if diagonal is not None:
            work.index_add_(1, self.diagonal, diagonal.to(A.dtype))
        if rhs is not None:
            work[:, Z:Z + P] = rhs
        failed, factors = [], []
        for g in self.groups:
            m, s, f = g.own.shape[0], g.own.shape[1], g.front.shape[1]
            blocks = work.index_select(1, g.blocks)
            U, bad = torch.linalg.cholesky_ex(blocks[:, :m * s * s].view(n, m, s, s),
                                              upper=True)
            failed.append(bad)
            # U^-T A_kf: the factor's rows right of the block (the last column: the
            # forward-substituted right-hand side); their Gram matrix is what
            # eliminating the node takes from its front.
            W = torch.linalg.solve_triangular(U.transpose(-1, -2),
                                              blocks[:, m * s * s:].view(n, m, s, f),
                                              upper=False)
            work.index_add_(1, g.ff, (W.transpose(-1, -2) @ W).view(n, -1), alpha=-1)
            factors.append((U, W))
        info = (torch.cat(failed, 1) != 0).any(1).to(torch.int32) if failed else \
            torch.zeros(n, dtype=torch.int32, device=A.device)
        return SparseFactorization(self, factors, info, rhs is not None)


@dataclass
class SparseFactorization:
    """The factors of :meth:`SparseCholeskyPlan.factorize`: per group, the nodes' upper
    diagonal factors (n, m, s, s) and their rows right of the block, the last column
    the forward-substituted right-hand side (n, m, s, f + 1) (``A = U^T U`` with ``U``
    block-sparse).

    ``info`` (n,) int: 0 where the factorisation succeeded, 1 where a matrix is not
    positive definite (its solves are meaningless)."""

    plan: SparseCholeskyPlan
    factors: List[Tuple[Tensor, Tensor]]
    info: Tensor
    has_rhs: bool = False

    def solve(self, b: Optional[Tensor] = None) -> Tensor:
        """``A^-1 b`` (n, P) for ``b`` (n, P) in the factors' dtype; without ``b``, that
        of the right-hand side given to :meth:`SparseCholeskyPlan.factorize`."""
        plan = self.plan
        P = plan.size
        if b is None:
            if not self.has_rhs:
                raise ValueError('no right-hand side was factorised: pass b')
            n = self.info.shape[0]
            dtype = self.factors[0][0].dtype if self.factors else torch.float64
            y = torch.zeros(n, P + 2, dtype=dtype, device=self.info.device)
            forward = [W[..., -1] for _, W in self.factors]
        else:
            n = b.shape[0]
            dtype = self.factors[0][0].dtype if self.factors else b.dtype
            y = b.new_zeros(n, P + 2, dtype=dtype)
            y[:, :P] = b
            forward = []
            # U^T y = b, the nodes in elimination order (padding and rhs: sinks) ...
            for g, (U, W) in zip(plan.groups, self.factors):
                m, s = g.own.shape
                yk = torch.linalg.solve_triangular(
                    U.transpose(-1, -2), y.index_select(1, g.own.flatten()).view(n, m, s, 1),
                    upper=False)
                y.index_add_(1, g.front.flatten(), (W.transpose(-1, -2) @ yk).view(n, -1),
                             alpha=-1)
                forward.append(yk[..., 0])
            y.zero_()
        # ... then U x = y in reverse (the padding and rhs columns read 0).
        for g, (U, W), yk in zip(reversed(plan.groups), reversed(self.factors),
                                 reversed(forward)):
            m, s = g.own.shape
            f = g.front.shape[1] - 1
            rhs = yk[..., None]
            if f:
                rhs = rhs - W[..., :f] @ y.index_select(1, g.front[:, :f].flatten()).view(
                    n, m, f, 1)
            y.index_copy_(1, g.own.flatten(),
                          torch.linalg.solve_triangular(U, rhs, upper=True).view(n, -1))
        return y[:, :P]


def _column_nodes(pattern: Tensor) -> List[List[int]]:
    """Columns with identical pattern rows, grouped (each group in column order; groups
    ordered by their first column)."""
    nodes: Dict[bytes, List[int]] = {}
    for c, row in enumerate(pattern.to(torch.uint8).numpy()):
        nodes.setdefault(row.tobytes(), []).append(c)
    return sorted(nodes.values(), key=lambda cols: cols[0])


def _node_adjacency(pattern: Tensor, nodes: Sequence[Sequence[int]]) -> List[set]:
    """For each node, the other nodes it meets."""
    owner = torch.empty(pattern.shape[0], dtype=torch.long)
    for k, cols in enumerate(nodes):
        owner[torch.tensor(cols)] = k
    adjacency = []
    for k, cols in enumerate(nodes):
        met = torch.unique(owner[pattern[cols[0]]]).tolist()
        adjacency.append(set(met) - {k})
    return adjacency


def _eliminate(adjacency: Sequence[set], widths: Sequence[int]
               ) -> Tuple[List[int], Dict[int, set]]:
    """Minimum-degree elimination order of the nodes (degree counted in columns; ties
    to the lower index) and each node's front: its neighbours when eliminated, fill
    included."""
    graph = [set(a) for a in adjacency]
    remaining = set(range(len(graph)))
    order, fronts = [], {}
    while remaining:
        k = min(remaining, key=lambda v: (sum(widths[u] for u in graph[v]), v))
        front = graph[k]
        for u in front:   # the front becomes a clique
            graph[u] |= front - {u}
            graph[u].discard(k)
        fronts[k] = set(front)
        order.append(k)
        remaining.discard(k)
    return order, fronts


__all__ = ['SparseCholeskyPlan', 'SparseFactorization']
