"""Demo: recover pose and shape of the embedded demo mouse from noisy 3D keypoints.

Runs on data the project generates itself (no downloads, no ../shared): samples
random poses (0.3 rad per joint) and shapes from the model's shape prior, observes
the model's keypoints with Gaussian noise, then fits global rotation, joint rotations,
shape and translation from the rest pose with L-BFGS, frame by frame in one batch
(the per-frame losses are summed; L-BFGS shares one line search across the batch).
Writes the target and fitted meshes of every frame as ``.obj`` files and prints the
per-frame error.

This is the body model at work on its own; the full stage-wise fitting framework
(handlers, registrants, ``tools/fit.py``) builds on it.

Usage::

    python demo/fit_keypoints.py --out demo_output
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smilfit.body_models import SMILModel  # noqa: E402
from smilfit.body_models.demo_model import demo_model_data  # noqa: E402


def sample_targets(model: SMILModel, frames: int, seed: int) -> dict:
    """Random poses (0.3 rad std per joint axis) and shapes from the model's prior."""
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    cov = torch.as_tensor(model.data.shape_cov if model.data.shape_cov is not None
                          else np.eye(K), dtype=model.dtype)
    chol = torch.linalg.cholesky(cov)
    return dict(global_orient=0.5 * torch.randn(frames, 3, generator=g, dtype=model.dtype),
                body_pose=0.3 * torch.randn(frames, J - 1, 3, generator=g, dtype=model.dtype),
                betas=torch.randn(frames, K, generator=g, dtype=model.dtype) @ chol.T,
                transl=20.0 * torch.randn(frames, 3, generator=g, dtype=model.dtype))


def fit(model: SMILModel, observed: torch.Tensor, iterations: int) -> dict:
    """Fit all parameters to (B, Kp, 3) observed keypoints from the rest pose."""
    B, J, K = observed.shape[0], model.num_joints, model.num_betas
    params = dict(global_orient=torch.zeros(B, 3, dtype=model.dtype),
                  body_pose=torch.zeros(B, J - 1, 3, dtype=model.dtype),
                  betas=torch.zeros(B, K, dtype=model.dtype),
                  transl=observed.mean(1) - model().keypoints.mean(1))
    stages = [('rigid', ['global_orient', 'transl']),
              ('full', ['global_orient', 'body_pose', 'betas', 'transl'])]
    for name, free in stages:
        for key, value in params.items():
            value.requires_grad_(key in free)
        optimizer = torch.optim.LBFGS([params[k] for k in free], lr=1.0, max_iter=20,
                                      line_search_fn='strong_wolfe',
                                      tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            optimizer.zero_grad()
            out = model(**params, return_vertices=False)
            loss = (out.keypoints - observed).square().sum()
            loss = loss + 1e-3 * params['betas'].square().sum()  # weak shape prior
            loss.backward()
            return loss
        for _ in tqdm(range(iterations), desc=f'stage {name}', leave=False):
            optimizer.step(closure)
    return {k: v.detach() for k, v in params.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_output', help='output directory for .obj files')
    parser.add_argument('--frames', type=int, default=8, help='frames to fit (default 8)')
    parser.add_argument('--noise', type=float, default=0.5,
                        help='keypoint noise std in mm (default 0.5)')
    parser.add_argument('--iterations', type=int, default=15,
                        help='L-BFGS outer iterations per stage (default 15)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.iterations < 1 or args.noise < 0:
        parser.error('--frames and --iterations must be >= 1 and --noise >= 0')

    start = time.perf_counter()
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    print(f'demo model: {model.num_vertices} vertices, {model.num_joints} joints, '
          f'{model.num_betas} shape directions, {len(model.keypoint_names)} keypoints '
          f'({model.data.units})')
    target = sample_targets(model, args.frames, args.seed)
    truth = model(**target)
    g = torch.Generator().manual_seed(args.seed + 1)
    observed = truth.keypoints + args.noise * torch.randn(
        truth.keypoints.shape, generator=g, dtype=model.dtype)
    fitted_params = fit(model, observed, args.iterations)
    fitted = model(**fitted_params)

    rest_joints = model().joints_kin[0]
    body_length = float((rest_joints.max(0).values - rest_joints.min(0).values).norm())
    errors = (fitted.keypoints - truth.keypoints).norm(dim=-1).mean(-1)
    noise_floor = (observed - truth.keypoints).norm(dim=-1).mean(-1)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = model.faces.numpy()
    import trimesh
    for b in range(args.frames):
        for tag, verts in (('target', truth.vertices), ('fit', fitted.vertices)):
            trimesh.Trimesh(verts[b].numpy(), faces, process=False).export(
                out_dir / f'frame{b:03d}_{tag}.obj')
    print('frame | keypoint error (mm) | observation noise (mm) | error / body length')
    for b in range(args.frames):
        print(f'{b:5d} | {errors[b]:19.3f} | {noise_floor[b]:22.3f} | '
              f'{100 * errors[b] / body_length:.3f} %')
    print(f'mean keypoint error {errors.mean():.3f} mm over {args.frames} frames '
          f'({100 * errors.mean() / body_length:.3f} % of the {body_length:.0f} mm body); '
          f'meshes in {out_dir}/; {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
