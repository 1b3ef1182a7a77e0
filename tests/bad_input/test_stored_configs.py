"""Configs stored in work dirs from elsewhere are data: a fit's results, a registration's
``chunks/config.json`` and the body model an inference run records may name registered
components only, so that looking at someone else's results (``tools/view.py``,
``tools/visualize.py``) runs nothing they name."""
import json

import h5py
import numpy as np
import pytest

from smilfit.engine.config_data import ConfigDataError
from smilfit.visualization import load_fit_run
from smilfit.visualization.scene import load_scene


def _payload(marker):
    """A registrant whose handler 'type' is an importable function that runs a command."""
    return dict(registrant=dict(type='SMILRegistrant', body_model=dict(type='DemoSMILModel'),
                                handlers=[dict(type='subprocess.run',
                                               args=['touch', str(marker)])],
                                stages=[]),
                data=dict(path='session.h5'))


def test_a_fit_whose_stored_config_names_a_function_is_refused(tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    with h5py.File(tmp_path / 'fit_results.h5', 'w') as f:
        f.attrs['format'] = 'smilfit-fit-results'
        f.attrs['config'] = json.dumps(_payload(marker))
        f.create_dataset('params/transl', data=np.zeros((1, 3)))
    with pytest.raises(ConfigDataError, match=r"registrant.handlers\[0\].type = "
                       "'subprocess.run' names no registered"):
        load_fit_run(tmp_path)
    assert not marker.exists()


def test_a_registration_whose_stored_config_names_a_function_is_refused(tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    cfg = _payload(marker)
    cfg['registrant']['body_model'] = dict(type='subprocess.run', args=['touch', str(marker)])
    (tmp_path / 'chunks').mkdir()
    (tmp_path / 'chunks' / 'config.json').write_text(json.dumps(cfg))
    np.savez(tmp_path / 'registrations.npz', names=np.array(['scan0']),
             scan_vertices=np.zeros((1, 4, 3), np.float32))
    with pytest.raises(ConfigDataError, match="registrant.body_model.type = 'subprocess.run'"):
        load_scene(tmp_path)
    assert not marker.exists()


def _predictions(path, body_model):
    """A tools/infer.py predictions.h5 of one item with parameters and a body model."""
    with h5py.File(path, 'w') as f:
        f.attrs['format'] = 'smilfit-inference'
        f.attrs['body_model'] = json.dumps(body_model)
        f['frame'] = np.array([0])
        f['instance'] = np.array([0])
        f['keypoints_3d'] = np.zeros((1, 2, 3))
        f['params/global_orient'] = np.zeros((1, 3))
        f['params/transl'] = np.zeros((1, 3))


def test_an_inference_run_whose_body_model_names_a_function_is_refused(tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    _predictions(tmp_path / 'predictions.h5',
                 dict(type='subprocess.run', args=['touch', str(marker)]))
    with pytest.raises(ConfigDataError, match=r"\(body_model\): type = 'subprocess.run'"):
        load_scene(tmp_path)
    assert not marker.exists()


def test_an_inference_run_whose_body_model_file_is_elsewhere_shows_keypoints(tmp_path):
    _predictions(tmp_path / 'predictions.h5',
                 dict(type='SMILModel', model_path=str(tmp_path / 'moved.pkl')))
    with pytest.warns(UserWarning, match='moved.pkl is not here: no meshes'):
        scene = load_scene(tmp_path)
    assert scene.vertices is None and scene.fitted.shape == (1, 1, 2, 3)
