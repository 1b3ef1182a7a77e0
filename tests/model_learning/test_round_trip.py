"""Synthetic round trip on the stick insect: scans -> registration -> learned model.

``configs/registration/stick_synthetic.py`` generates 10 point-cloud scans (500 points,
noise std 1e-3, random pose, random shape at twice the prior's spread) from the SMIL
stick insect, ``tools/register.py`` registers them (rigid -> shape -> pose and shape ->
per-vertex offsets) and ``tools/build_model.py`` learns a 5-component shape space from
the registrations (unposed by inverse LBS, offsets included). The learned space is
compared with the model's own ``shapedirs``:

- principal angles between the learned and the true 5-dimensional subspaces
  (measured 0.07, 0.09, 0.12, 0.24, 0.80 rad; the weakest true direction moves
  vertices by ~0.4 % of the body length per sigma, below the registrations' error);
- the true rest shapes of the scans projected onto the learned model: mean per-vertex
  error 0.0046 (0.25 % of the body length ~1.8) against 0.027 for the template alone;
- the registrations themselves: mean per-vertex error 0.0105 to the true meshes
  (tangential sliding along the thin legs included), scan-to-mesh distance 0.0012.

Thresholds leave about a factor 2 of margin over these numbers.
"""
import json

import numpy as np

from tests.conftest import REPO_ROOT, shared_path

CONFIG = REPO_ROOT / 'configs' / 'registration' / 'stick_synthetic.py'


def test_stick_round_trip_recovers_shape_space(tmp_path, monkeypatch):
    model_path = shared_path('models', 'SMILy_STICK.pkl')
    monkeypatch.chdir(REPO_ROOT)
    from smilfit.body_models import load_model_data
    from smilfit.cli.build_model import main as build_model
    from smilfit.cli.register import main as register
    from smilfit.model_learning import principal_angles

    work, scans = tmp_path / 'work', tmp_path / 'scans'
    rc = register([str(CONFIG), '--work-dir', str(work), '--no-progress', '--cfg-options',
                   f'data.scan_dir={scans}', f'body_model.model_path={model_path}'])
    assert rc == 0
    summary = json.loads((work / 'summary.json').read_text())
    assert summary['num_scans'] == 10 and summary['num_diverged'] == 0
    assert summary['errors']['scan_to_mesh_mean']['mean'] < 0.003
    assert summary['ground_truth']['per_vertex_mean'] < 0.02

    learned_path = tmp_path / 'learned.json'
    rc = build_model([str(model_path), str(work / 'registrations.npz'), '-o',
                      str(learned_path), '--num-components', '5', '--no-progress',
                      '--report', str(tmp_path / 'report.json')])
    assert rc == 0
    original, learned = load_model_data(model_path), load_model_data(learned_path)
    K = learned.shapedirs.shape[-1]
    assert K == 5
    angles = principal_angles(learned.shapedirs.reshape(-1, K),
                              original.shapedirs.reshape(-1, original.shapedirs.shape[-1]))
    print('principal angles (rad):', np.round(angles, 3))
    assert np.all(angles[:3] < 0.3), angles
    assert angles[3] < 0.5, angles
    assert angles[4] < 1.3, angles     # the weakest direction: near the noise floor

    with np.load(scans / 'ground_truth.npz') as gt:
        betas = gt['betas'].astype(np.float64)
    rest_true = original.v_template[None] + np.einsum('vck,nk->nvc', original.shapedirs,
                                                      betas)
    D = learned.shapedirs.reshape(-1, K)
    residual = (rest_true - learned.v_template[None]).reshape(len(betas), -1).T
    coeffs = np.linalg.lstsq(D, residual, rcond=None)[0]
    projected = learned.v_template[None] + (D @ coeffs).T.reshape(rest_true.shape)
    err = np.linalg.norm(projected - rest_true, axis=-1).mean()
    template_err = np.linalg.norm(original.v_template[None] - rest_true, axis=-1).mean()
    print(f'per-vertex error of the learned model {err:.4g}, template alone {template_err:.4g}')
    assert err < 0.01
    assert err < 0.35 * template_err
