"""Small random body models for tests that must not depend on ../shared."""
from typing import Optional

import numpy as np

from smilfit.body_models.model_data import BodyModelData


def random_parents(num_joints: int, rng: np.random.Generator) -> np.ndarray:
    """A random tree with root 0 where each joint's parent has a smaller index."""
    parents = np.array([-1] + [int(rng.integers(0, j)) for j in range(1, num_joints)])
    return parents


def toy_model_data(num_joints: int = 6, num_vertices: int = 40, num_betas: int = 3,
                   with_posedirs: bool = False, with_pca: bool = False,
                   static_joints: bool = False, seed: int = 0,
                   parents: Optional[np.ndarray] = None) -> BodyModelData:
    """A random but valid model: vertices near joints, 2-3 weights per vertex."""
    rng = np.random.default_rng(seed)
    J, V, K = num_joints, num_vertices, num_betas
    parents = random_parents(J, rng) if parents is None else np.asarray(parents)
    joints = np.zeros((J, 3))
    for j in range(J):  # parents precede children in toy trees
        if parents[j] >= 0:
            joints[j] = joints[parents[j]] + rng.normal(0, 1, 3)
    owner = rng.integers(0, J, V)
    v_template = joints[owner] + rng.normal(0, 0.3, (V, 3))
    weights = np.zeros((V, J))
    weights[np.arange(V), owner] = rng.uniform(0.5, 1.0, V)
    other = rng.integers(0, J, V)
    weights[np.arange(V), other] += rng.uniform(0.0, 0.5, V)
    weights /= weights.sum(1, keepdims=True)
    faces = rng.integers(0, V, (2 * V, 3))
    J_regressor = np.zeros((J, V))
    for j in range(J):
        ids = rng.choice(V, 4, replace=False)
        J_regressor[j, ids] = 0.25
    P = 9 * (J - 1) if with_posedirs else 0
    return BodyModelData(
        v_template=v_template, faces=faces.astype(np.int64), weights=weights,
        parents=parents.astype(np.int64), joint_names=[f'j{i}' for i in range(J)],
        shapedirs=rng.normal(0, 0.1, (V, 3, K)), posedirs=rng.normal(0, 0.01, (V, 3, P)),
        J_regressor=J_regressor, J=joints, static_joint_locs=static_joints,
        scaledirs=rng.normal(0, 0.1, (K, J, 3)) if with_pca else None,
        transdirs=rng.normal(0, 1.0, (K, J, 3)) if with_pca else None,
        shape_mean=np.zeros(K), shape_cov=np.eye(K))
