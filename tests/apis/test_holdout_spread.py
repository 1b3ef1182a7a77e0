"""``benchmarks/holdout.py --spread`` refits every case with another initial damping of the
Levenberg-Marquardt stages and reads the spread of the held-out medians as their noise
level. That is only sound if the damping changes the path to the optimum and not the
optimum: on a well-posed synthetic session the fits agree, and only the LM stages'
``lambda_init`` is changed."""
import copy

import h5py
import numpy as np

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets.synthetic_animals import generate_animal_session

from ..conftest import benchmark_module, mouse_session_config_on_demo_mouse


def test_only_the_lm_stages_initial_damping_changes():
    bench = benchmark_module('holdout')
    cfg = mouse_session_config_on_demo_mouse('unused.h5')
    cfg.registrant.stages.append(dict(name='adam', fit=['transl'], n_iter=3,
                                      optimizer=dict(type='Adam', lr=0.01)))
    before = copy.deepcopy(cfg.registrant.stages)
    bench.with_initial_damping(cfg, 1e-5)
    for old, new in zip(before, cfg.registrant.stages):
        if old['optimizer']['type'] == 'Adam':
            assert new == old
            continue
        assert new['optimizer'] == dict(old['optimizer'], lambda_init=1e-5)
        assert {k: v for k, v in new.items() if k != 'optimizer'} == \
            {k: v for k, v in old.items() if k != 'optimizer'}


def test_the_initial_damping_changes_the_path_not_the_fit(tmp_path):
    from smilfit.utils import register_all_modules
    register_all_modules()
    bench = benchmark_module('holdout')
    damping = min(bench.SPREAD_DAMPINGS)       # the farthest from the config's 1e-3
    generate_animal_session(tmp_path / 'data.h5', num_animals=1, frames=6, num_views=2,
                            noise_px=0.5, seed=1)
    fits = {}
    for name, lambda_init in (('config', None), ('damped', damping)):
        cfg = mouse_session_config_on_demo_mouse(tmp_path / 'data.h5')
        if lambda_init is not None:
            bench.with_initial_damping(cfg, lambda_init)
        with h5py.File(fit_dataset(cfg, tmp_path / name, progress=False), 'r') as f:
            fits[name] = f['metrics/reprojection_px'][:]
    assert not np.array_equal(fits['config'], fits['damped'])      # another path ...
    px = {k: float(np.median(v)) for k, v in fits.items()}
    assert px['config'] < 1.5 * 0.5            # fitted to the labels' noise
    # ... to the same fit, within a twentieth of the labels' 0.5 px: the chains stop
    # where a step lowers no frame's cost by one label residual's squared error
    # (noise_tol), so another path stops elsewhere within the labels' noise
    assert abs(px['config'] - px['damped']) < 0.05 * 0.5, px
