"""Real images: StanfordExtra dogs fitted with the builder's quadruped, keypoints then silhouettes.

The pipeline of ``configs/fitting/dog_stanfordextra.py`` on single uncalibrated views:

1. ingest (``ingest_stanfordextra``): square crops around the dog's box, the schema's
   default pinhole camera (f = max(W, H) of the original image), masks from the RLE;
2. keypoints only (the config's stages without the ``sil`` handler): the registrant's
   ``multi_start`` fits every dog from 8 upright headings (``camera_facing_orientations``)
   placed at the depth where the body spans the keypoints; the best final keypoint loss
   wins (hypotheses with a point behind the camera are ruled out);
3. + silhouettes (the stages with ``sil``): pose, shape and per-joint log_scale from
   keypoints and masks (Adam), started from step 2.

Metrics (``smilfit.evaluation.functional``): IoU of the rendered silhouette (soft renderer
with sigma 0.05 px^2, thresholded at 0.5) against the annotated mask in the stored
image; PCK@0.1 of the annotated box's longer side (in stored pixels). The baseline is
the rigid-only fit (the best heading after the ``rigid`` stage, rest pose and shape).

CI test: 4 dogs at 64 x 64 px, 30 silhouette steps. Slow test (``--run-slow``): all 25
at 128 x 128, printing the table (``pytest -s``); also ``python -m
tests.apis.test_dog_silhouette_fit [SIZE] [ITERS]``.
"""
from __future__ import annotations

import importlib
import sys
import time

import numpy as np
import pytest
import torch
from mmengine import Config

from smilfit.datasets.hdf5_format import DatasetReader
from smilfit.datasets.ingest_stanfordextra import ingest_stanfordextra, stored_bboxes
from smilfit.datasets.masks import masks_from_hdf5
from smilfit.evaluation.functional import bbox_sizes, keypoint_errors, pck_at, silhouette_iou
from smilfit.registry import REGISTRANTS
from smilfit.renderers import SoftSilhouetteRenderer

from tests.conftest import REPO_ROOT, shared_path

CONFIG = REPO_ROOT / 'configs' / 'fitting' / 'dog_stanfordextra.py'
MODEL_INPUTS = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale', 'bone_trans')


def load_dogs(path, indices):
    """Observations as the handlers read them (B, C=1, ...) and the stored boxes (B, 4)."""
    reader = DatasetReader(path)
    batch = reader.read(indices, keys=['keypoints_2d', 'confidence', 'visible', 'valid',
                                       'K', 'R', 't'])
    masks, mask_valid = masks_from_hdf5(reader, indices)
    obs = dict(keypoints_2d=batch['keypoints_2d'], confidence=batch['confidence'],
               visible=batch['visible'], view_valid=batch['valid'], K=batch['K'],
               R=batch['R'], t=batch['t'], masks=masks, mask_valid=mask_valid)
    obs = {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
    obs = {k: v.float() if v.is_floating_point() else v for k, v in obs.items()}
    return obs, stored_bboxes(reader)[np.asarray(indices)], reader.keypoint_names


def build_registrant(cfg, stages, keypoint_names, multi_start=True):
    """The config's registrant with the given stages; its ``multi_start`` runs on all of
    them (``multi_start=False``: none, e.g. when continuing from a previous fit)."""
    reg_cfg = dict(cfg.registrant)
    reg_cfg.update(stages=stages, body_model=dict(cfg.body_model))
    if multi_start:
        reg_cfg['multi_start'] = dict(reg_cfg['multi_start'], stages=len(stages))
    else:
        reg_cfg.pop('multi_start', None)
    reg = REGISTRANTS.build(reg_cfg)
    reg.setup(dict(keypoint_names=list(keypoint_names)))
    return reg


def fit_dogs(path, indices, num_yaw=8, sil_iters=None, config=CONFIG):
    """Rigid baseline, keypoints-only and keypoints + silhouette fits of the given dogs."""
    cfg = Config.fromfile(str(config))
    for module in cfg.get('custom_imports', {}).get('imports', []):
        importlib.import_module(module)
    obs, bboxes, names = load_dogs(path, indices)
    stages = [dict(s) for s in cfg.registrant.stages]
    kp_stages = [s for s in stages if s.get('loss_weights', {}).get('sil', 0) == 0]
    sil_stages = [s for s in stages if s.get('loss_weights', {}).get('sil', 0) > 0]
    assert kp_stages and sil_stages, 'the config needs keypoint and silhouette stages'
    for s in sil_stages:
        s['n_iter'] = s['n_iter'] if sil_iters is None else int(sil_iters)
    assert cfg.registrant.multi_start['num_headings'] == num_yaw
    kp_obs = {k: v for k, v in obs.items() if k not in ('masks', 'mask_valid')}
    times = {}
    out = dict(obs=obs, bboxes=bboxes, times=times)
    for label, chosen in (('rigid', kp_stages[:1]), ('keypoints', kp_stages)):
        t0 = time.perf_counter()
        reg = build_registrant(cfg, chosen, names)   # every heading, the best kept
        out[label] = reg.fit(kp_obs).params
        times[label] = time.perf_counter() - t0
    t0 = time.perf_counter()
    reg = build_registrant(cfg, sil_stages, names, multi_start=False)
    init = {k: v for k, v in out['keypoints'].items() if k in MODEL_INPUTS}
    out['silhouette'] = reg.fit(obs, init_params=init).params
    times['silhouette'] = time.perf_counter() - t0
    out['model'], out['kp_handler'] = reg.body_model, reg.handlers['kp2d']
    return out


def evaluate(out, params, sigma=0.05):
    """(B,) silhouette IoU and (B,) PCK@0.1 of the box size for fitted ``params``."""
    model, obs, handler = out['model'], out['obs'], out['kp_handler']
    with torch.no_grad():
        o = model(**{k: params[k] for k in MODEL_INPUTS if k in params}, return_vertices=True)
        H, W = obs['masks'].shape[-2:]
        cams = dict(K=obs['K'], R=obs['R'], t=obs['t'], dist=None, height=H, width=W)
        sil = SoftSilhouetteRenderer(sigma=sigma)(o.vertices, model.faces, cams)
        uv = handler.project(o, obs, params)[0][:, 0]  # (B, M, 2)
    iou = silhouette_iou(sil[:, 0].numpy(), obs['masks'][:, 0].numpy() > 0.5).iou
    gt = handler.select_data(obs['keypoints_2d'], 2)[:, 0].numpy()
    visible = handler.select_data(obs['visible'], 2)[:, 0].numpy()
    errors, valid = keypoint_errors(uv.numpy(), gt, visible)
    pck = pck_at(errors, valid, 0.1, norm=bbox_sizes(bboxes=out['bboxes'])[:, None], axis=-1)
    return iou, pck


def run(tmp_dir, indices, size, sil_iters=None, verbose=False):
    """Ingest, fit and evaluate; returns {fit name: (iou (B,), pck (B,))} and the output."""
    js = shared_path('data', 'stanfordextra_sample', 'StanfordExtra_sample.json')
    h5 = ingest_stanfordextra(js, f'{tmp_dir}/dogs_{size}.h5', target_size=size,
                              indices=indices, overwrite=True, progress=False)
    out = fit_dogs(h5, list(range(len(indices))), sil_iters=sil_iters)
    table = {name: evaluate(out, out[name]) for name in ('rigid', 'keypoints', 'silhouette')}
    if verbose:
        print(f'\n{len(indices)} StanfordExtra dogs at {size} x {size} px; fit times (s): '
              + ', '.join(f'{k} {v:.1f}' for k, v in out['times'].items()))
        print(f'{"fit":<28}{"mean IoU":>10}{"PCK@0.1":>10}')
        for name, label in (('rigid', 'rigid baseline (rest pose)'),
                            ('keypoints', 'keypoints only'), ('silhouette', '+ silhouettes')):
            iou, pck = table[name]
            print(f'{label:<28}{np.nanmean(iou):>10.3f}{np.nanmean(pck):>10.3f}')
        print('per dog (IoU / PCK): ' + '; '.join(
            f'{i}: {table["keypoints"][0][n]:.2f}/{table["keypoints"][1][n]:.2f} -> '
            f'{table["silhouette"][0][n]:.2f}/{table["silhouette"][1][n]:.2f}'
            for n, i in enumerate(indices)))
    return table, out


def test_dog_config_builds():
    cfg = Config.fromfile(str(CONFIG))
    assert 'custom_imports' not in cfg   # the quadruped registers with smilfit.body_models
    reg = build_registrant(cfg, list(cfg.registrant.stages), cfg.data.joint_lookup.values())
    assert [s.name for s in reg.stages] == ['rigid', 'pose_shape', 'silhouette']
    assert reg.handlers['kp2d'].match is not None and len(reg.handlers['kp2d'].match) == 24
    assert reg.stages[-1].loss_weights['sil'] > 0 and reg.handlers['sil'].weight == 0


def test_dog_silhouette_fit_few_dogs(tmp_path):
    table, _ = run(tmp_path, [0, 1, 2, 3], size=64, sil_iters=30)
    (iou_r, pck_r), (iou_k, pck_k), (iou_s, pck_s) = (
        table['rigid'], table['keypoints'], table['silhouette'])
    assert np.mean(pck_k) > np.mean(pck_r)  # posing helps the keypoints too
    # keypoints-only: most keypoints within 10 % of the box
    assert np.mean(pck_k) >= 0.8, pck_k
    # the posed fits beat the rigid rest-pose baseline clearly
    assert np.mean(iou_k) >= np.mean(iou_r) + 0.05, (iou_r, iou_k)
    # silhouettes raise the IoU of every dog's fit and keep the keypoints
    assert np.mean(iou_s) >= np.mean(iou_k) + 0.03, (iou_k, iou_s)
    assert np.mean(iou_s) >= 0.65 and np.min(iou_s - iou_k) > 0.0, iou_s
    assert np.mean(iou_s) >= np.mean(iou_r) + 0.1, (iou_r, iou_s)
    assert np.mean(pck_s) >= np.mean(pck_k) - 0.05, (pck_k, pck_s)


@pytest.mark.slow
def test_dog_silhouette_fit_all_25(tmp_path):
    table, _ = run(tmp_path, list(range(25)), size=128, verbose=True)
    iou_r, iou_k, iou_s = (table[k][0] for k in ('rigid', 'keypoints', 'silhouette'))
    pck_k, pck_s = table['keypoints'][1], table['silhouette'][1]
    assert np.mean(pck_k) >= 0.8
    assert np.mean(iou_s) >= np.mean(iou_k) + 0.03 and np.mean(iou_k) > np.mean(iou_r)
    assert np.mean(pck_s) >= np.mean(pck_k) - 0.05


if __name__ == '__main__':
    import tempfile
    torch.set_num_threads(1)
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as tmp:
        run(tmp, list(range(25)), size=size, sil_iters=iters, verbose=True)
