"""The merge of a dataset fit's batch files into ``fit_results.h5``: every sample's arrays
as the batches wrote them, streamed one batch at a time (a long recording's results never
sit in memory whole), and a clear error for batch files that do not belong together."""
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import fit_dataset
from smilfit.apis.fitting.results import _dataset_name, merge_chunks
from smilfit.datasets.synthetic_animals import generate_animal_session

from ..conftest import REPO_ROOT

BATCH = 3


def _config(path):
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'animal_skeletons.py'))
    cfg.data = dict(cfg.data, path=str(path), batch_size=BATCH, skeleton_frames=8)
    return cfg


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """One animal's 24 frames fitted in batches of ``BATCH``."""
    tmp = tmp_path_factory.mktemp('merge')
    torch.set_num_threads(1)
    generate_animal_session(tmp / 'session.h5', num_animals=1, frames=24)
    results = fit_dataset(_config(tmp / 'session.h5'), tmp / 'fit', progress=False)
    return SimpleNamespace(frames=24, results=results, session=tmp / 'session.h5',
                           chunks=tmp / 'fit' / 'chunks')


def _chunks(fitted):
    paths = sorted(fitted.chunks.glob('batch_*.npz'))
    assert len(paths) == fitted.frames // BATCH
    out = []
    for path in paths:
        with np.load(path) as z:
            out.append({k: z[k] for k in z.files if k != 'history'})
    return out


def test_the_results_hold_every_batch_s_arrays_in_order(fitted):
    chunks = _chunks(fitted)
    with h5py.File(fitted.results) as f:
        for key in chunks[0]:
            np.testing.assert_array_equal(f[_dataset_name(key)][:],
                                          np.concatenate([c[key] for c in chunks]), key)
        np.testing.assert_array_equal(f['samples/index'][:], np.arange(fitted.frames))


def test_the_merge_holds_about_one_batch_in_memory(tmp_path):
    """Concatenating every batch (as the merge once did) needs the results twice over;
    streamed, the merge holds about one batch (here 20 batch files of 1.2 MB)."""
    chunks = tmp_path / 'chunks'
    chunks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        rows = np.arange(100 * i, 100 * (i + 1))
        np.savez(chunks / f'batch_{i:05d}.npz', index=rows,
                 joints=rng.normal(size=(100, 1000, 3)).astype(np.float32),
                 diverged=np.zeros(100, bool))
    model = SimpleNamespace(joint_names=['root'], keypoint_names=['nose'])
    registrant = SimpleNamespace(body_model=model, stages=[SimpleNamespace(name='fit')],
                                 keypoint_handler=lambda: None)
    reader = SimpleNamespace(keypoint_names=['nose'])
    tracemalloc.start()
    try:
        merge_chunks(chunks, tmp_path / 'fit_results.h5', 20, registrant, reader,
                     dict(path=str(tmp_path / 'data.h5')), 'stamp')
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    written = 20 * 100 * 1000 * 3 * 4
    assert peak < 0.25 * written, (peak, written)
    with h5py.File(tmp_path / 'fit_results.h5') as f:
        assert f['joints'].shape == (2000, 1000, 3)
        np.testing.assert_array_equal(f['samples/index'][:], np.arange(2000))
        with np.load(chunks / 'batch_00007.npz') as z:
            np.testing.assert_array_equal(f['joints'][700:800], z['joints'])


def test_batch_files_that_differ_are_named(fitted, tmp_path):
    import shutil
    work = tmp_path / 'fit'
    shutil.copytree(fitted.chunks.parent, work)
    path = work / 'chunks' / 'batch_00003.npz'
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays['joints'] = arrays['joints'][:, :-1]
    np.savez(path, **arrays)
    before = (work / 'fit_results.h5').read_bytes()
    with pytest.raises(ValueError, match='batch_00003.npz: joints'):
        fit_dataset(_config(fitted.session), work, progress=False, resume=True)
    assert (work / 'fit_results.h5').read_bytes() == before     # nothing half-written


_MERGE_IN_A_PROCESS = '''
import sys
from pathlib import Path
from types import SimpleNamespace
from smilfit.apis.fitting.results import merge_chunks
def status_mb(key):
    # (VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak at the fork)
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
model = SimpleNamespace(joint_names=['root'], keypoint_names=['nose'])
registrant = SimpleNamespace(body_model=model, stages=[SimpleNamespace(name='fit')],
                             keypoint_handler=lambda: None)
reader = SimpleNamespace(keypoint_names=['nose'])
tmp = Path(sys.argv[1])
before = status_mb('VmRSS')
merge_chunks(tmp / 'chunks', tmp / 'fit_results.h5', int(sys.argv[2]), registrant, reader,
             dict(path=str(tmp / 'data.h5')), 'stamp')
print(before, status_mb('VmHWM'))
'''


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads /proc')
def test_the_merge_process_does_not_keep_the_file_it_wrote_in_memory(tmp_path):
    """HDF5's chunk cache left the memory of every chunk written with the process (freed,
    but not given back: about the file's size). The merge writes through: its process
    grows by far less than the 80 MB it writes."""
    import subprocess
    import sys
    chunks = tmp_path / 'chunks'
    chunks.mkdir()
    rng = np.random.default_rng(0)
    batches, rows = 80, 256
    for i in range(batches):
        # (a fit's arrays: a few joints or keypoints per sample, in chunks of tens of KB)
        np.savez(chunks / f'batch_{i:05d}.npz', index=np.arange(rows * i, rows * (i + 1)),
                 diverged=np.zeros(rows, bool),
                 **{f'param_p{k}': rng.random((rows, 35, 3), dtype=np.float32)
                    for k in range(10)})
    out = subprocess.run([sys.executable, '-c', _MERGE_IN_A_PROCESS, str(tmp_path),
                          str(batches)], capture_output=True, text=True, check=True)
    before, peak = map(float, out.stdout.split())
    written = batches * rows * 35 * 3 * 4 * 10 / 2 ** 20
    assert written > 75
    assert peak - before < 0.4 * written, (before, peak, written)
