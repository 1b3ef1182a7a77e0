"""One global scale per animal (``registrant.shared.global_log_scale=True``, the
``animal_scale`` variant of ``benchmarks/holdout.py``): every frame of an animal gets the
same scale, each animal its own, where its frames' own scales would put it, and the fit
still explains the labels to their noise."""
import h5py
import numpy as np
import pytest

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets.synthetic_animals import generate_animal_session

from ..conftest import benchmark_module, mouse_session_config_on_demo_mouse

NOISE_PX = 0.5


@pytest.fixture(scope='module')
def fits(tmp_path_factory):
    """The mouse session config on the demo mouse, two animals (the second's skeleton
    moved by 5 % of the body length per bone), two cameras, 0.5 px label noise: fitted
    with one scale per frame (as shipped) and one per animal."""
    from smilfit.utils import register_all_modules
    register_all_modules()
    tmp = tmp_path_factory.mktemp('animal_scale')
    generate_animal_session(tmp / 'data.h5', num_animals=2, frames=6, num_views=2,
                            noise_px=NOISE_PX, seed=1)
    bench = benchmark_module('holdout')
    out = {}
    for variant in ('shipped', 'animal_scale'):
        cfg = mouse_session_config_on_demo_mouse(tmp / 'data.h5')
        bench.apply_variant(cfg, variant)
        assert cfg.registrant.shared.get('global_log_scale', False) == (variant == 'animal_scale')
        with h5py.File(fit_dataset(cfg, tmp / variant, progress=False), 'r') as f:
            out[variant] = dict(scale=f['params/global_log_scale'][:].ravel(),
                                animal=f['samples/animal'][:],
                                reprojection=f['metrics/reprojection_px'][:])
    return out


def test_every_frame_of_an_animal_shares_its_scale(fits):
    shared, per_frame = fits['animal_scale'], fits['shipped']
    scales = [shared['scale'][shared['animal'] == a] for a in (0, 1)]
    assert all(s.size == 6 and np.ptp(s) == 0.0 for s in scales)
    assert np.ptp(per_frame['scale'][per_frame['animal'] == 1]) > 0   # (as shipped: free)
    # each animal's own, near the median of its frames' own scales (log units: 1e-2 = 1 %)
    for a, s in enumerate(scales):
        own = np.median(per_frame['scale'][per_frame['animal'] == a])
        assert abs(s[0] - own) < 1e-2, (a, s[0], own)
    assert abs(scales[0][0] - scales[1][0]) > 0.05   # the second animal is fitted larger


def test_one_scale_per_animal_still_fits_the_labels_to_their_noise(fits):
    for variant, fit in fits.items():
        assert np.median(fit['reprojection']) < 1.5 * NOISE_PX, variant
