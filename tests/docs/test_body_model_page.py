"""The rigged-mesh example of docs/body_models.md works as written: arrays exported from a
rigged mesh (here the demo mouse's) become a model file that SMILModel loads and poses."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from ..conftest import REPO_ROOT, child_env
from .page_blocks import python_block

PAGE = REPO_ROOT / 'docs' / 'body_models.md'


def test_the_rigged_mesh_example_writes_a_model_smilfit_poses(tmp_path):
    from smilfit.body_models import SMILModel
    from smilfit.body_models.demo_model import demo_model_data
    from smilfit.body_models.io import save_model_data
    demo = demo_model_data()
    save_model_data(demo, tmp_path / 'demo.json')
    np.savez(tmp_path / 'rig.npz', vertices=demo.v_template, faces=demo.faces,
             joint_names=np.array(demo.joint_names), parents=demo.parents,
             joints=demo.J_regressor @ demo.v_template, weights=demo.weights)
    code = python_block(PAGE, 'import numpy as np')
    run = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=child_env(OMP_NUM_THREADS='1'))
    assert run.returncode == 0, run.stderr[-3000:]
    assert f'{len(demo.parents)} joints, {len(demo.v_template)} vertices' in run.stdout
    model = SMILModel(model_path=str(tmp_path / 'my_animal.json'))
    reference = SMILModel(model_path=str(tmp_path / 'demo.json'))
    pose = 0.3 * torch.randn(2, model.num_joints - 1, 3, dtype=torch.float32)
    out = model(body_pose=pose)
    assert torch.isfinite(out.vertices).all()
    # the same skeleton as the rig's source, posed the same way
    torch.testing.assert_close(out.joints_kin, reference(body_pose=pose).joints_kin,
                               atol=1e-5, rtol=1e-5)
