"""Learn a body model's shape space from registrations in correspondence.

Input: N rest-pose meshes with the template's topology (unposed registrations, see
:mod:`.unpose`), optionally the rest joints each was fitted with and the per-joint
``log_scale`` / ``bone_trans`` each fit used. Output: a
:class:`~smilfit.body_models.BodyModelData` that :class:`~smilfit.body_models.SMILModel`
loads, with

- the mean template and PCA shape blendshapes (``shapedirs``), the number of
  components chosen by explained variance (or given);
- per-joint scale and bone-translation directions (``scaledirs`` / ``transdirs``):
  ``'entangled'`` (one PCA over vertices, scales and translations together, so the
  same coefficients drive all three: call the model with ``betas=b, scale_weights=b,
  trans_weights=b``, the reference's entangled mode), ``'separate'`` (three PCAs, three
  coefficient vectors) or ``'mesh'`` (each sample's scale baked into its mesh, no
  scale directions);
- the shape prior (mean and covariance of the training coefficients);
- a re-fitted joint regressor (regressed-joint templates) or mean static joints.

Per-joint scale has no offset in the model (``scale = 1 + sum_k w_k scaledirs_k``), so
the *mean* scale and translation are baked into the template: every rest mesh is
skinned at the rest pose with the mean scale ``s_bar`` (arithmetic mean) and mean
translation ``d_bar``, and each sample keeps its *relative* scale ``s / s_bar`` and
translation ``W_p (d - d_bar)`` (``W_p`` the parent's rest-pose world scale). For
vertices skinned to one joint this re-parametrisation is exact; blended vertices
differ by LBS's usual blending error (reported by the tests).

Shapes: N samples, V vertices, J joints, K components.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..body_models.lbs import (KinematicLevels, chain_transforms, local_transforms,
                               skin_points, skinning_transforms)
from ..body_models.model_data import BodyModelData
from .joint_regressor import joint_support, refit_joint_regressor
from .pca import PCAResult, fit_pca

#: How per-joint scale and translation enter the learned model.
SCALE_MODES = ('entangled', 'separate', 'mesh')
#: How the shape directions are scaled.
NORMALIZATIONS = ('std', 'unit')


@dataclass
class ShapeSamples:
    """Registrations prepared for learning (scale means baked in).

    Attributes:
        vertices: (N, V, 3) rest meshes in the learned model's frame.
        joints: (N, J, 3) their rest joints.
        rel_scale: (N, J, 3) per-joint scale relative to the mean, or ``None``.
        rel_trans: (N, J, 3) bone translation relative to the mean (model units, in
            the parent's rest frame), or ``None``.
    """

    vertices: np.ndarray
    joints: np.ndarray
    rel_scale: Optional[np.ndarray] = None
    rel_trans: Optional[np.ndarray] = None

    @property
    def num_samples(self) -> int:
        return int(self.vertices.shape[0])


@dataclass
class LearnedShapeSpace:
    """The result of :meth:`ShapeSpaceLearner.fit`.

    Attributes:
        data: the learned model (validated).
        coefficients: (N, K) shape coefficients (``betas``) of the training samples.
        scale_coefficients, trans_coefficients: (N, K_s) / (N, K_t) in ``'separate'``
            mode, else ``None`` (entangled: the betas drive scale and translation).
        pca: the PCA of the (combined) features; ``pca_scale`` / ``pca_trans`` in
            ``'separate'`` mode.
        mean_scale: (J, 3) mean per-joint scale baked into the template (ones without).
        mean_bone_trans: (J, 3) mean bone translation baked into the template.
        samples: the prepared training samples.
        report: numbers worth printing (components, explained variance, errors).
    """

    data: BodyModelData
    coefficients: np.ndarray
    scale_coefficients: Optional[np.ndarray]
    trans_coefficients: Optional[np.ndarray]
    pca: PCAResult
    pca_scale: Optional[PCAResult]
    pca_trans: Optional[PCAResult]
    mean_scale: np.ndarray
    mean_bone_trans: np.ndarray
    samples: ShapeSamples
    report: Dict[str, Any]

    @property
    def num_components(self) -> int:
        return int(self.data.num_betas)


def bake_scale_trans(weights: np.ndarray, parents: np.ndarray, vertices: np.ndarray,
                     joints: np.ndarray, log_scale: np.ndarray, bone_trans: np.ndarray,
                     propagate_scaling: bool = False
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply per-joint scale and bone translation at the rest pose (LBS with R = I).

    Args:
        weights: (V, J); parents: (J,).
        vertices: (N, V, 3) rest meshes; joints: (N, J, 3) their rest joints.
        log_scale, bone_trans: (N, J, 3) or (J, 3).

    Returns:
        ``(vertices (N, V, 3), joints (N, J, 3), world_linear (N, J, 3, 3))``: the
        scaled rest meshes, their (kinematic) joints and each joint's rest-pose world
        linear map.
    """
    f64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    V_, J_ = f64(vertices), f64(joints)
    N, J = J_.shape[:2]
    ls, bt = f64(log_scale).expand(N, J, 3), f64(bone_trans).expand(N, J, 3)
    levels = KinematicLevels.from_parents(parents)
    rot = torch.eye(3, dtype=torch.float64).expand(N, J, 3, 3)
    local = local_transforms(rot, J_, torch.as_tensor(np.asarray(parents, dtype=np.int64)),
                             levels.root, log_scale=ls, bone_trans=bt,
                             propagate_scaling=propagate_scaling)
    world = chain_transforms(local, levels)
    maps = skinning_transforms(world, J_)
    w = f64(weights)
    w = w / w.sum(1, keepdim=True)
    out = skin_points(V_, w, maps)
    return out.numpy(), world[..., :3, 3].numpy(), world[..., :3, :3].numpy()


def _as_array(x, name: str, shape: Tuple[Optional[int], ...]) -> Optional[np.ndarray]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != len(shape) or any(s is not None and g != s for g, s in zip(a.shape, shape)):
        want = tuple('*' if s is None else s for s in shape)
        raise ValueError(f'{name}: expected shape {want}, got {a.shape}')
    if not np.all(np.isfinite(a)):
        raise ValueError(f'{name}: contains NaN/inf')
    return a


class ShapeSpaceLearner:
    """Learns a shape space on a template's topology and skeleton (see the module doc).

    Args:
        template: the model the registrations were made with (topology, skinning
            weights, skeleton, keypoints, pose blendshapes are kept).
        scale_mode: ``'entangled'``, ``'separate'`` or ``'mesh'`` (only used when scale
            or translation data are given).
        num_components: fixed number of shape components (default: by
            ``explained_variance``). In ``'separate'`` mode it applies to the vertex PCA.
        explained_variance: fraction of the variance the chosen components explain
            (also for the scale/translation PCAs in ``'separate'`` mode).
        max_components: cap on the number of components.
        normalize: ``'std'``: directions scaled by the standard deviation (training
            coefficients have unit variance); ``'unit'``: unit-norm directions (the
            reference's layout; the prior covariance holds the variances).
        propagate_scaling: the scaling convention the fits used (SMILModel's flag);
            the learned model must be used with the same.
        scale_feature_weight: length that converts a relative scale change into model
            units in the entangled PCA (default: RMS distance of the template vertices
            from their centroid).
        trans_feature_weight: factor on bone translations (model units) in the
            entangled PCA.
        refit_regressor: re-fit the joint regressor (regressed-joint templates).
        regressor_ridge: relative ridge of :func:`.refit_joint_regressor`.
        name: name of the learned model (default: ``<template>_learned``).
    """

    def __init__(self, template: BodyModelData, scale_mode: str = 'entangled',
                 num_components: Optional[int] = None, explained_variance: float = 0.99,
                 max_components: Optional[int] = None, normalize: str = 'std',
                 propagate_scaling: bool = False,
                 scale_feature_weight: Optional[float] = None,
                 trans_feature_weight: float = 1.0, refit_regressor: bool = True,
                 regressor_ridge: float = 1e-6, name: Optional[str] = None) -> None:
        if scale_mode not in SCALE_MODES:
            raise ValueError(f'scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}')
        if normalize not in NORMALIZATIONS:
            raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got {normalize!r}')
        template.validate()
        self.template = template
        self.scale_mode = scale_mode
        self.num_components = num_components
        self.explained_variance = float(explained_variance)
        self.max_components = max_components
        self.normalize = normalize
        self.propagate_scaling = bool(propagate_scaling)
        v = np.asarray(template.v_template, dtype=np.float64)
        rms = float(np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean()))
        self.scale_feature_weight = rms if scale_feature_weight is None else float(
            scale_feature_weight)
        self.trans_feature_weight = float(trans_feature_weight)
        self.refit_regressor = bool(refit_regressor)
        self.regressor_ridge = float(regressor_ridge)
        self.name = name or f'{template.name}_learned'
        J = template.num_joints
        self.mean_scale = np.ones((J, 3))
        self.mean_bone_trans = np.zeros((J, 3))
        self._uses_scale = False
        self._fitted: Optional[LearnedShapeSpace] = None

    # ------------------------------------------------------------ preparation
    def _rest_joints(self, vertices: np.ndarray) -> np.ndarray:
        t = self.template
        if t.static_joint_locs:
            return np.broadcast_to(np.asarray(t.J, dtype=np.float64),
                                   (vertices.shape[0],) + t.J.shape).copy()
        return np.einsum('jv,nvc->njc', np.asarray(t.J_regressor, dtype=np.float64), vertices)

    def prepare(self, rest_vertices, rest_joints=None, log_scale=None, bone_trans=None,
                fit_means: bool = False) -> ShapeSamples:
        """Bake scales into the rest meshes (the training means; a sample's own in
        ``'mesh'`` mode) and compute relative scales/translations.

        Args:
            rest_vertices: (N, V, 3) unposed registrations (template rest frame).
            rest_joints: (N, J, 3) rest joints of their fits (default: the template's
                regressor applied to the meshes, or its static joints).
            log_scale, bone_trans: (N, J, 3) per-joint scale/translation of the fits.
            fit_means: (re)compute the mean scale and translation from these samples.
        """
        t = self.template
        V, J = t.num_vertices, t.num_joints
        X = _as_array(rest_vertices, 'rest_vertices', (None, V, 3))
        N = X.shape[0]
        Jn = _as_array(rest_joints, 'rest_joints', (N, J, 3))
        if Jn is None:
            Jn = self._rest_joints(X)
        ls = _as_array(log_scale, 'log_scale', (N, J, 3))
        bt = _as_array(bone_trans, 'bone_trans', (N, J, 3))
        if fit_means:
            self._uses_scale = ls is not None or bt is not None
        elif self._uses_scale != (ls is not None or bt is not None):
            raise ValueError('give log_scale/bone_trans for every set of samples or for none '
                             '(the model was learned ' +
                             ('with' if self._uses_scale else 'without') + ' them)')
        if not self._uses_scale:
            return ShapeSamples(X, Jn)
        s = np.ones((N, J, 3)) if ls is None else np.exp(ls)
        d = np.zeros((N, J, 3)) if bt is None else bt.copy()
        root = int(np.flatnonzero(np.asarray(t.parents) < 0)[0])
        d[:, root] = 0.0  # the root has no bone; its translation is ignored by the model
        if self.scale_mode == 'mesh':
            verts, joints, _ = bake_scale_trans(t.weights, t.parents, X, Jn, np.log(s), d,
                                                self.propagate_scaling)
            return ShapeSamples(verts, joints)
        if fit_means:
            self.mean_scale = s.mean(0)
            self.mean_bone_trans = d.mean(0)
        verts, joints, world_lin = bake_scale_trans(
            t.weights, t.parents, X, Jn, np.log(self.mean_scale), self.mean_bone_trans,
            self.propagate_scaling)
        parents = np.asarray(t.parents)
        parent_lin = world_lin[:, np.clip(parents, 0, None)]  # (N, J, 3, 3)
        rel_trans = np.einsum('njab,njb->nja', parent_lin, d - self.mean_bone_trans)
        rel_trans[:, root] = 0.0
        return ShapeSamples(verts, joints, rel_scale=s / self.mean_scale, rel_trans=rel_trans)

    # -------------------------------------------------------------- features
    def _entangled(self) -> bool:
        return self._uses_scale and self.scale_mode == 'entangled'

    def _separate(self) -> bool:
        return self._uses_scale and self.scale_mode == 'separate'

    def features(self, samples: ShapeSamples) -> np.ndarray:
        """(N, D) PCA features: vertices, then (entangled) weighted scales and translations."""
        N = samples.num_samples
        parts = [samples.vertices.reshape(N, -1)]
        if self._entangled():
            parts.append(self.scale_feature_weight * (samples.rel_scale - 1.0).reshape(N, -1))
            parts.append(self.trans_feature_weight * samples.rel_trans.reshape(N, -1))
        return np.concatenate(parts, axis=1)

    # ----------------------------------------------------------------- fit
    def fit(self, rest_vertices, rest_joints=None, log_scale=None, bone_trans=None
            ) -> LearnedShapeSpace:
        """Learn the shape space from N training samples (arguments as :meth:`prepare`)."""
        t = self.template
        V, J = t.num_vertices, t.num_joints
        samples = self.prepare(rest_vertices, rest_joints, log_scale, bone_trans,
                               fit_means=True)
        N = samples.num_samples
        if N < 2:
            raise ValueError(f'learning a shape space needs at least 2 registrations, got {N}')
        pca = fit_pca(self.features(samples), self.num_components, self.explained_variance,
                      self.max_components)
        K = pca.num_components
        sigma = np.sqrt(pca.variances) if self.normalize == 'std' else np.ones(K)
        sigma = np.where(sigma > 0, sigma, 1.0)
        comps = pca.components * sigma[:, None]  # (K, D): model units per coefficient
        coefficients = pca.scores / sigma
        mean_v = pca.mean[:3 * V].reshape(V, 3)
        shapedirs = comps[:, :3 * V].reshape(K, V, 3).transpose(1, 2, 0).copy()
        scaledirs = transdirs = None
        pca_s = pca_t = None
        scale_coef = trans_coef = None
        tf = float(t.trans_factor)
        if self._entangled():
            scaledirs = comps[:, 3 * V:3 * V + 3 * J].reshape(K, J, 3) / self.scale_feature_weight
            transdirs = comps[:, 3 * V + 3 * J:].reshape(K, J, 3) / (
                self.trans_feature_weight * tf)
        elif self._separate():
            pca_s = fit_pca((samples.rel_scale - 1.0).reshape(N, -1), None,
                            self.explained_variance, self.max_components)
            pca_t = fit_pca(samples.rel_trans.reshape(N, -1), None, self.explained_variance,
                            self.max_components)
            ss = self._sigma(pca_s)
            st = self._sigma(pca_t)
            scaledirs = (pca_s.components * ss[:, None]).reshape(-1, J, 3)
            transdirs = (pca_t.components * st[:, None]).reshape(-1, J, 3) / tf
            scale_coef, trans_coef = pca_s.scores / ss, pca_t.scores / st

        # Joints: re-fitted regressor (regressed templates) or the mean static joints.
        if t.static_joint_locs:
            J_regressor = np.asarray(t.J_regressor, dtype=np.float64).copy()
            J_rest = samples.joints.mean(0)
        else:
            J_regressor = np.asarray(t.J_regressor, dtype=np.float64)
            if self.refit_regressor:
                support = joint_support(t.weights, t.parents, J_regressor)
                J_regressor = refit_joint_regressor(samples.vertices, samples.joints, support,
                                                    J_regressor, self.regressor_ridge)
            J_rest = J_regressor @ mean_v

        cov = np.cov(coefficients.T).reshape(K, K) if K else np.zeros((0, 0))
        cov = 0.5 * (cov + cov.T)
        extra = copy.deepcopy(t.extra)
        extra.pop('legacy', None)  # the legacy pickle layout no longer describes this model
        info: Dict[str, Any] = dict(
            source_model=t.name, num_registrations=int(N), scale_mode=(
                self.scale_mode if self._uses_scale else 'none'),
            normalize=self.normalize, propagate_scaling=self.propagate_scaling,
            explained_variance=[float(r) for r in pca.explained_ratio],
            entangled=bool(self._entangled()))
        if self._separate():
            info['scale_weights_cov'] = np.cov(scale_coef.T).reshape(
                scale_coef.shape[1], -1).tolist()
            info['trans_weights_cov'] = np.cov(trans_coef.T).reshape(
                trans_coef.shape[1], -1).tolist()
        extra['model_learning'] = info
        data = dataclasses.replace(
            t, v_template=mean_v, shapedirs=shapedirs, J_regressor=J_regressor, J=J_rest,
            scaledirs=scaledirs, transdirs=transdirs, shape_mean=coefficients.mean(0),
            shape_cov=cov, name=self.name, extra=extra)
        data.validate()
        space = LearnedShapeSpace(
            data=data, coefficients=coefficients, scale_coefficients=scale_coef,
            trans_coefficients=trans_coef, pca=pca, pca_scale=pca_s, pca_trans=pca_t,
            mean_scale=self.mean_scale.copy(), mean_bone_trans=self.mean_bone_trans.copy(),
            samples=samples, report={})
        self._fitted = space
        space.report.update(
            num_components=K, explained_variance=float(pca.explained_ratio.sum()),
            train=self.errors(samples))
        return space

    def _sigma(self, pca: PCAResult) -> np.ndarray:
        s = np.sqrt(pca.variances) if self.normalize == 'std' else np.ones(pca.num_components)
        return np.where(s > 0, s, 1.0)

    # ------------------------------------------------------------ evaluation
    def _space(self) -> LearnedShapeSpace:
        if self._fitted is None:
            raise RuntimeError('call fit() first')
        return self._fitted

    def project(self, samples: ShapeSamples, num_components: Optional[int] = None
                ) -> np.ndarray:
        """Least-squares (N, K) shape coefficients of prepared samples (first K used)."""
        space = self._space()
        K = space.num_components if num_components is None else int(num_components)
        pca = space.pca
        sigma = self._sigma(pca)
        return ((self.features(samples) - pca.mean) @ pca.components[:K].T) / sigma[:K]

    def reconstruct(self, samples: ShapeSamples, num_components: Optional[int] = None
                    ) -> np.ndarray:
        """(N, V, 3) rest meshes of the samples' projections onto the first K components."""
        data = self._space().data
        b = self.project(samples, num_components)
        K = b.shape[1]
        return data.v_template[None] + np.einsum('vck,nk->nvc', data.shapedirs[..., :K], b)

    def errors(self, samples: ShapeSamples, num_components: Optional[int] = None
               ) -> Dict[str, float]:
        """Per-vertex rest-frame errors (model units) of the projection and of the template.

        Returns:
            ``mean`` / ``max``: mean and maximum per-vertex distance after projecting
            onto the first K components; ``template_mean`` / ``template_max``: the same
            for the mean template alone (no shape coefficients).
        """
        rec = self.reconstruct(samples, num_components)
        err = np.linalg.norm(rec - samples.vertices, axis=-1)
        tmpl = np.linalg.norm(self._space().data.v_template[None] - samples.vertices, axis=-1)
        return dict(mean=float(err.mean()), max=float(err.max()),
                    template_mean=float(tmpl.mean()), template_max=float(tmpl.max()))

    def model_inputs(self, samples: ShapeSamples) -> Dict[str, np.ndarray]:
        """SMILModel shape inputs that reproduce prepared samples with the learned model.

        ``betas`` always; ``scale_weights`` / ``trans_weights`` (the betas themselves in
        entangled mode, the separate coefficients otherwise) when the model has scale
        directions.
        """
        space = self._space()
        b = self.project(samples)
        out = dict(betas=b)
        if self._entangled():
            out.update(scale_weights=b, trans_weights=b)
        elif self._separate():
            N = samples.num_samples
            ss, st = self._sigma(space.pca_scale), self._sigma(space.pca_trans)
            out['scale_weights'] = ((samples.rel_scale - 1.0).reshape(N, -1)
                                    - space.pca_scale.mean) @ space.pca_scale.components.T / ss
            out['trans_weights'] = (samples.rel_trans.reshape(N, -1)
                                    - space.pca_trans.mean) @ space.pca_trans.components.T / st
        return out


def learn_shape_space(template: BodyModelData, rest_vertices, rest_joints=None,
                      log_scale=None, bone_trans=None, **options: Any) -> LearnedShapeSpace:
    """One-call form of :class:`ShapeSpaceLearner` (``options`` are its arguments)."""
    return ShapeSpaceLearner(template, **options).fit(rest_vertices, rest_joints, log_scale,
                                                      bone_trans)


__all__ = ['ShapeSpaceLearner', 'LearnedShapeSpace', 'ShapeSamples', 'learn_shape_space',
           'bake_scale_trans', 'SCALE_MODES', 'NORMALIZATIONS']
