"""Fixtures of the regression-model tests: a tiny synthetic dataset and batches."""
import pytest
import torch
from mmengine.dataset import default_collate

from smilfit.utils import register_all_modules


@pytest.fixture(scope='session')
def synthetic_h5(tmp_path_factory):
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    path = tmp_path_factory.mktemp('regression') / 'synthetic.h5'
    generate_synthetic_dataset(path, num_sessions=2, frames_per_session=4, num_views=2,
                               image_size=64, progress=False, seed=3)
    return path


@pytest.fixture(scope='session')
def multiview_batch(synthetic_h5):
    """4 samples, 2 views, 64 px: dict(inputs (4, 2, 3, 64, 64), data_samples)."""
    register_all_modules()
    from smilfit.registry import DATASETS
    ds = DATASETS.build(dict(type='MultiViewHDF5Dataset', ann_file=str(synthetic_h5),
                             pipeline=[dict(type='PackInputs')]))
    return default_collate([ds[i] for i in range(4)])


@pytest.fixture(scope='session')
def singleview_batch(synthetic_h5):
    register_all_modules()
    from smilfit.registry import DATASETS
    ds = DATASETS.build(dict(type='SingleViewHDF5Dataset', ann_file=str(synthetic_h5),
                             pipeline=[dict(type='PackInputs')]))
    return default_collate([ds[i] for i in range(4)])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
