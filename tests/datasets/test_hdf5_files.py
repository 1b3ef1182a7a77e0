"""HDF5 files as smilfit reads and writes them: numeric datasets carry a checksum per chunk,
and a damaged file is an error naming it, not an h5py traceback or numbers read wrong."""
import h5py
import numpy as np
import pytest

from smilfit.datasets.hdf5.files import (DamagedFileError, checksum_options, create_checked,
                                         read_h5, reading)
from smilfit.datasets.hdf5_format import DatasetReader

from .test_hdf5_format import make_batch, write


def flip_byte_in_chunk(path, dataset: str, chunk: int = 0) -> None:
    """Change one byte in the middle of a stored chunk of ``dataset`` (its data, not the
    file's structure)."""
    with h5py.File(path, 'r') as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, 'r+b') as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x55]))


def test_checksums_on_numeric_arrays_only():
    assert checksum_options(np.float32, (4, 3)) == {'fletcher32': True}
    assert checksum_options(np.bool_, (4,)) == {'fletcher32': True}
    assert checksum_options(h5py.string_dtype(), (4,)) == {}
    assert checksum_options(h5py.vlen_dtype(np.uint8), (4, 2)) == {}
    assert checksum_options(np.float64, ()) == {}


def test_create_checked_stores_what_hdf5_can_checksum(tmp_path):
    with h5py.File(tmp_path / 'f.h5', 'w') as f:
        assert create_checked(f, 'a', np.arange(6.0).reshape(2, 3)).fletcher32
        assert create_checked(f, 'empty', np.zeros((0, 3))).fletcher32
        assert not create_checked(f, 's', np.array(['x', 'y'], dtype=object),
                                  dtype=h5py.string_dtype()).fletcher32
        assert not create_checked(f, 'scalar', 3.0).fletcher32
        np.testing.assert_array_equal(f['a'][()], np.arange(6.0).reshape(2, 3))


def test_a_flipped_byte_in_a_written_dataset_fails_the_read(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(20, seed=1)])
    with h5py.File(path, 'r') as f:
        assert f['views/keypoints_2d'].fletcher32 and f['keypoints_3d'].fletcher32
    flip_byte_in_chunk(path, 'views/keypoints_2d')
    reader = DatasetReader(path)        # (the header and the tables are intact)
    with pytest.raises(DamagedFileError) as err:
        reader.read(np.arange(20), keys=['keypoints_2d'])
    message = str(err.value)
    assert str(path) in message and 'damaged' in message and '\n' not in message
    # the fields the flip did not touch still read
    assert reader.read([0], keys=['keypoints_3d'])['keypoints_3d'].shape == (1, 4, 3)


def test_without_the_checksum_the_same_flip_would_read_silently(tmp_path):
    """What the checksum is for: the same flip in a dataset without one changes a number."""
    path = tmp_path / 'plain.h5'
    data = np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64)
    with h5py.File(path, 'w') as f:
        f.create_dataset('x', data=data, chunks=(64, 64))
    flip_byte_in_chunk(path, 'x')
    with h5py.File(path, 'r') as f:
        assert not np.array_equal(f['x'][()], data)


def test_reading_names_the_file_for_h5py_errors_and_passes_its_own(tmp_path):
    path = tmp_path / 'r.h5'
    with h5py.File(path, 'w') as f:
        f.attrs['history'] = '[1, 2'                       # damaged JSON
        f.create_dataset('x', data=np.zeros(3))
    with pytest.raises(DamagedFileError, match=f'{path}: cannot read fit results: .*absent'):
        with read_h5(path, 'fit results') as f:
            f['absent']                                   # h5py's KeyError
    with pytest.raises(DamagedFileError, match='r.h5: cannot read fit results'):
        with read_h5(path, 'fit results') as f:
            import json
            json.loads(f.attrs['history'])
    with pytest.raises(KeyError, match='my own'):             # not h5py's: passes through
        with read_h5(path, 'fit results'):
            raise KeyError('my own')
    with pytest.raises(ValueError, match='mine'):
        with h5py.File(path, 'r') as f, reading(path, 'x'):
            raise ValueError('mine')
    with pytest.raises(FileNotFoundError, match='nothing.h5'):
        with read_h5(tmp_path / 'nothing.h5', 'fit results'):
            pass


def test_a_truncated_file_is_named(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(20, seed=1)])
    data = path.read_bytes()
    cut = tmp_path / 'cut.h5'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(DamagedFileError, match=f'{cut}: cannot read fit results: .*truncated'):
        with read_h5(cut, 'fit results'):
            pass


def test_a_file_written_whole_must_store_every_chunk(tmp_path):
    """HDF5 reads a chunk its index does not list as the fill value, with no error: in a
    file smilfit writes in one go, a missing chunk is damage."""
    from smilfit.datasets.hdf5.files import missing_chunks
    path = tmp_path / 'p.h5'
    with h5py.File(path, 'w') as f:
        f.create_dataset('whole', data=np.arange(100.0), chunks=(10,))
        part = f.create_dataset('part', shape=(100,), chunks=(10,), dtype='f4')
        part[:45] = 1.0
    with h5py.File(path, 'r') as f:
        assert missing_chunks(f) == {'part': (5, 10)}
    with read_h5(path, 'network predictions') as f:       # not asked: reads
        assert float(f['part'][99]) == 0.0
    with pytest.raises(DamagedFileError, match="p.h5: cannot read network predictions: "
                                               "'part' has 5 of its 10 chunks"):
        with read_h5(path, 'network predictions', written_whole=True):
            pass
