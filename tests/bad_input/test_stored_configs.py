"""Configs stored in work dirs from elsewhere are data: a fit's results and a registration's
``chunks/config.json`` may name registered components only, so that looking at someone
else's results (``tools/view.py``, ``tools/visualize.py``) runs nothing they name."""
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
