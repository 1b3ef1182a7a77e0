"""The fit report's label places on a case with known truth: a label on the skin of the
back, mapped to the spine joint next to the one whose skinning moves that skin, is
reported on that skin, moved by the right joint."""
import json

import torch

from smilfit.datasets.synthetic import build_body_model

from ..conftest import mouse_session_config_on_demo_mouse

SPINE = ('spine_1', 'spine_2', 'spine_3')


def _back_skin_session(path):
    """A demo-mouse session whose labels are its keypoints but the spine joints, plus
    ``back_skin``: the dorsal vertex that spine_2 alone moves (skinning weight > 0.9)."""
    from smilfit.datasets.synthetic_animals import generate_animal_session
    model = build_body_model(None)
    spine_2 = model.joint_names.index('spine_2')
    weights = model.lbs_weights
    own = torch.nonzero((weights.argmax(1) == spine_2)
                        & (weights[:, spine_2] > 0.9)).flatten()
    vertex = int(own[model.v_template[own, 2].argmax()])   # the highest: up is z
    keypoints = {name: spec for name, spec in model.data.keypoints.items()
                 if name not in SPINE}
    keypoints['back_skin'] = {'vertex': vertex}
    generate_animal_session(path, num_animals=1, frames=16, num_views=6, noise_px=0.5,
                            pose_std=0.3, offset_std=0.0, seed=3,
                            body_model=dict(type='DemoSMILModel', keypoints=keypoints))
    return [n for n in keypoints if n != 'back_skin']


def _config(data, names, joint):
    cfg = mouse_session_config_on_demo_mouse(data, batch_size=16)
    cfg.data['joint_lookup'] = dict({n: n for n in names}, **{joint: 'back_skin'})
    return cfg


def test_a_back_label_mapped_to_a_neighbouring_joint_is_reported_on_the_right_skin(
        tmp_path):
    from smilfit.apis.fitting import fit_dataset
    data = tmp_path / 'back.h5'
    names = _back_skin_session(data)
    fit_dataset(_config(data, names, 'spine_3'), tmp_path / 'fit', progress=False)
    report = json.loads((tmp_path / 'fit' / 'fit_quality.json').read_text())
    place = report['label_places']['keypoints']['back_skin']
    assert place['model_point'] == 'spine_3' and place['moved_by'] == 'spine_2'
    assert place['off_surface'] < 0.02                  # on the skin, within 2 % of L
    text = (tmp_path / 'fit' / 'fit_quality.txt').read_text()
    # keypoint, model point, marker t (or -), skin moved by, off surface
    assert any(line.split()[:2] == ['back_skin', 'spine_3'] and line.split()[3] == 'spine_2'
               for line in text.splitlines())
