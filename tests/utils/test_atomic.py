"""smilfit.utils.atomic: whole files or none, readable under the user's umask."""
import os
import stat

import pytest
import torch

from smilfit.utils.atomic import atomic_open, atomic_path


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith('.tmp'))


def test_atomic_open_writes_whole_file(tmp_path):
    path = tmp_path / 'out.txt'
    with atomic_open(path) as f:
        f.write('hello')
        assert not path.exists()  # not visible under its name before it is complete
    assert path.read_text() == 'hello'
    assert _leftovers(tmp_path) == []


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_open(path, 'wb') as f:
            f.write(b'partial')
            raise RuntimeError('killed mid-write')
    assert path.read_bytes() == b'old'
    assert _leftovers(tmp_path) == []


def test_atomic_path_with_torch_save(tmp_path):
    path = tmp_path / 'ckpt.pth'
    with atomic_path(path) as tmp:
        torch.save({'w': torch.arange(3)}, tmp)
    assert torch.equal(torch.load(path, weights_only=True)['w'], torch.arange(3))


@pytest.mark.parametrize('umask, expected', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_honours_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = tmp_path / 'shared.h5'
        with atomic_open(path, 'wb') as f:
            f.write(b'x')
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected


def test_refuses_append_mode(tmp_path):
    with pytest.raises(ValueError, match='whole files'):
        with atomic_open(tmp_path / 'a.txt', 'a'):
            pass


def test_writers_built_on_it_give_readable_files(tmp_path):
    """Model files and scans written for collaborators are group/world readable under
    umask 022 (tempfile.mkstemp would make them 0600)."""
    from smilfit.body_models.io import write_bytes_atomic
    from smilfit.datasets.masks import save_mask_png
    import numpy as np
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / 'model.json', b'{}')
        save_mask_png(tmp_path / 'mask.png', np.eye(4))
    finally:
        os.umask(old)
    for name in ('model.json', 'mask.png'):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert _leftovers(tmp_path) == []


def test_atomic_dir_appears_whole_with_umask_mode(tmp_path):
    from smilfit.utils.atomic import atomic_dir
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / 'scans') as d:
            (tmp_path / 'scans').exists() and pytest.fail('visible before it is complete')
            open(os.path.join(d, 'a.txt'), 'w').close()
    finally:
        os.umask(old)
    assert (tmp_path / 'scans' / 'a.txt').exists()
    assert stat.S_IMODE((tmp_path / 'scans').stat().st_mode) == 0o755
    with pytest.raises(KeyError):
        with atomic_dir(tmp_path / 'other'):
            raise KeyError('interrupted')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['scans']


def test_atomic_dir_replaces_an_existing_folder_only_when_complete(tmp_path):
    """``replace=True`` (reports written over an old one): the old folder stays whole until
    the new one is, an interrupted write leaves it untouched, and no hidden folder remains."""
    from smilfit.utils.atomic import atomic_dir
    report = tmp_path / 'report'
    report.mkdir()
    (report / 'old.txt').write_text('old')
    with pytest.raises(KeyError):
        with atomic_dir(report, replace=True) as d:
            open(os.path.join(d, 'new.txt'), 'w').close()
            raise KeyError('interrupted')
    assert sorted(p.name for p in report.iterdir()) == ['old.txt']
    with atomic_dir(report, replace=True) as d:
        assert (report / 'old.txt').exists()
        open(os.path.join(d, 'new.txt'), 'w').close()
    assert sorted(p.name for p in report.iterdir()) == ['new.txt']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['report']
    with pytest.raises(FileExistsError):           # without replace an existing folder stays
        with atomic_dir(report):
            pass


def test_streaming_writers_publish_their_own_temporary_file(tmp_path):
    """``publish`` names a finished temporary file; ``atomic_path(suffix=)`` keeps the
    extension a writer reads the format from."""
    from smilfit.utils.atomic import publish
    tmp = tmp_path / '.data.h5.partial'
    tmp.write_bytes(b'complete')
    publish(tmp, tmp_path / 'data.h5')
    assert (tmp_path / 'data.h5').read_bytes() == b'complete' and not tmp.exists()
    with atomic_path(tmp_path / 'labels.slp', suffix='.slp') as path:
        assert path.endswith('.slp') and os.path.basename(path).startswith('.labels.slp')
        with open(path, 'wb') as f:
            f.write(b'x')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['data.h5', 'labels.slp']


@pytest.mark.parametrize('keep', [0.5, 0.0])
def test_a_damaged_npz_reads_as_none_and_leaves_no_file_open(tmp_path, keep):
    """A resumed run reads its own chunks with load_npz_whole: one cut short (or empty) is
    None, and its file is closed (a long run reading many must not leak handles)."""
    import gc
    import warnings

    import numpy as np

    from smilfit.utils.atomic import load_npz_whole, save_npz
    path = tmp_path / 'chunk.npz'
    save_npz(path, dict(a=np.arange(100.0)))
    assert load_npz_whole(path)['a'].shape == (100,)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert load_npz_whole(path) is None
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
