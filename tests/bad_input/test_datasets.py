"""Bad input: prepared datasets edited or written by other tools, interrupted ingestion.

Each row: how the file is broken, and the message (naming the file and the field)."""
import h5py
import numpy as np
import pytest

from smilfit.datasets import generate_synthetic_dataset
from smilfit.datasets.hdf5_format import DatasetFormatError, DatasetReader

from ..conftest import shared_path


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp('bad_datasets') / 'good.h5'
    generate_synthetic_dataset(path, num_sessions=1, frames_per_session=4, num_views=3,
                               image_size=64, masks=False, progress=False)
    return path


def _replace(f, path, data):
    del f[path]
    f.create_dataset(path, data=data)


# case, edit of the file, message fragment
CASES = [
    ('cameras-for-fewer-views', lambda f: _replace(f, 'views/K', f['views/K'][:, :2]),
     r'field views/K has shape \(4, 2, 3, 3\), expected \(4, 3, 3, 3\)'),
    ('keypoint-count', lambda f: _replace(f, 'views/confidence', f['views/confidence'][:, :, :-1]),
     r'field views/confidence has shape \(4, 3, \d+\), expected \(4, 3, \d+\)'),
    ('fewer-rows', lambda f: _replace(f, 'views/t', f['views/t'][:3]),
     r'field views/t has shape \(3, 3, 3\), expected \(4, 3, 3\)'),
]


@pytest.mark.parametrize('case, edit, message', CASES, ids=[c[0] for c in CASES])
def test_inconsistent_fields_are_named_on_open(tmp_path, dataset, case, edit, message):
    path = tmp_path / f'{case}.h5'
    path.write_bytes(dataset.read_bytes())
    with h5py.File(path, 'a') as f:
        edit(f)
    with pytest.raises(DatasetFormatError, match=message) as info:
        DatasetReader(path)
    assert str(path) in str(info.value)


def test_interrupted_preprocessing_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM during ingestion: 'interrupted', a non-zero exit, no output file
    (it used to print an AttributeError about concurrent.futures.process)."""
    import smilfit.datasets.ingest_sleap as ingest
    from smilfit.cli.preprocess_sleap import main
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt('signal 15')
        yield  # a generator, as _render is

    monkeypatch.setattr(ingest, '_render', interrupted)
    out = tmp_path / 'out.h5'
    rc = main([str(session), str(out), '--max-frames', '2', '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 130 and 'interrupted, nothing written' in err
    assert 'AttributeError' not in err and not out.exists()
