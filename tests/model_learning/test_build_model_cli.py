"""tools/build_model.py: npz and mesh-file inputs, hold-out report, errors."""
import json

import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.body_models.io import save_model_data
from smilfit.cli.build_model import main
from smilfit.registration import Scan, save_scan
from tests.conftest import REPO_ROOT

DT = torch.float64


@pytest.fixture(scope='module')
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp('tmpl') / 'demo.json'
    save_model_data(demo_model_data(), path)
    return path


def posed_registrations(N=12, seed=0):
    model = SMILModel(data=demo_model_data(), dtype=DT)
    g = torch.Generator().manual_seed(seed)
    p = dict(global_orient=0.3 * torch.randn(N, 3, generator=g, dtype=DT),
             body_pose=0.2 * torch.randn(N, model.num_joints - 1, 3, generator=g, dtype=DT),
             betas=torch.randn(N, model.num_betas, generator=g, dtype=DT),
             transl=torch.randn(N, 3, generator=g, dtype=DT))
    return model, p, model(**p)


def test_npz_posed_with_holdout(template, tmp_path, capsys):
    model, p, out = posed_registrations(N=24)
    regs = tmp_path / 'regs.npz'
    np.savez(regs, vertices=out.vertices.numpy(), **{k: v.numpy() for k, v in p.items()})
    dst, report = tmp_path / 'learned.json', tmp_path / 'report.json'
    assert main([str(template), str(regs), '-o', str(dst), '--holdout', '0.25',
                 '--report', str(report), '--no-progress', '--explained-variance',
                 '0.999999']) == 0
    rep = json.loads(report.read_text())
    assert rep['train'] == 18 and rep['holdout'] == 6
    # 18 registrations of 9 random betas span the shape space: held-out shapes are
    # reproduced exactly,
    # far better than by the mean template
    assert rep['holdout_errors']['mean'] < 1e-3 * rep['holdout_errors']['template_mean']
    assert rep['train_errors']['max'] < 1e-8
    learned = SMILModel(model_path=str(dst))
    assert learned.num_betas == rep['num_components'] <= 9
    assert 'holdout' in capsys.readouterr().out
    assert main([str(template), str(regs), '-o', str(dst), '--no-progress']) == 2  # exists


def test_mesh_files_rest_pose(template, tmp_path):
    data = demo_model_data()
    rng = np.random.default_rng(0)
    folder = tmp_path / 'meshes'
    folder.mkdir()
    for i in range(5):
        v = data.v_template + np.einsum('vck,k->vc', data.shapedirs[..., :2],
                                        rng.normal(size=2))
        save_scan(Scan(v, faces=data.faces), folder / f'reg_{i}.obj')
    dst = tmp_path / 'learned.pkl'
    assert main([str(template), str(folder), '-o', str(dst), '--no-progress',
                 '--explained-variance', '0.999999']) == 0
    assert SMILModel(model_path=str(dst)).num_betas == 2


def test_errors_and_help(template, tmp_path, capsys):
    regs = tmp_path / 'bad.npz'
    np.savez(regs, vertices=np.zeros((3, 10, 3)))
    assert main([str(template), str(regs), '-o', str(tmp_path / 'x.json')]) == 2
    np.savez(regs, points=np.zeros((3, 10, 3)))
    assert main([str(template), str(regs), '-o', str(tmp_path / 'x.json')]) == 2
    assert not (tmp_path / 'x.json').exists()
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    assert 'explained-variance' in capsys.readouterr().out
    assert 'from smilfit.cli.build_model import main' in (
        REPO_ROOT / 'tools' / 'build_model.py').read_text()
