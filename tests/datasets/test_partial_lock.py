"""One writer per dataset: a second writer of the same path, in this process or another,
is refused while the first holds its partial file, and never removes or publishes it; a
partial file nobody holds (a killed run's) is written over; preparing a config's dataset
waits for another process making the same one."""
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from smilfit.datasets.hdf5_format import (DatasetBusyError, DatasetReader, DatasetWriter,
                                          partial_path, wait_for_writer)
from smilfit.datasets.hdf5.partial_lock import writer_active

from .test_hdf5_format import C, NAMES, make_batch, write

pytest.importorskip('fcntl')

HERE = Path(__file__).parent


def open_writer(path, **kwargs):
    w = DatasetWriter(path, keypoint_names=NAMES, num_views=C, units='mm', source='test',
                      **kwargs)
    w.open()
    return w


def test_a_second_writer_of_the_same_path_is_refused_and_leaves_the_first_whole(tmp_path):
    path = tmp_path / 'd.h5'
    first = open_writer(path)
    first.add_session('s0', ['a', 'b', 'c'])
    first.add_samples(make_batch(5, images=False))
    with pytest.raises(DatasetBusyError, match='another process is writing'):
        open_writer(path, overwrite=True)
    with pytest.raises(DatasetBusyError):
        open_writer(path, resume=True)
    assert writer_active(partial_path(path))
    first.commit()
    assert len(DatasetReader(path)) == 5
    assert not partial_path(path).exists() and not writer_active(partial_path(path))
    write(path, [make_batch(3, images=False)], overwrite=True)   # free again
    assert len(DatasetReader(path)) == 3


def test_a_writer_in_another_process_is_refused_and_its_file_published_whole(tmp_path):
    """The case that corrupted datasets: two processes preparing one path. The second
    no longer takes the live partial file for a killed run's."""
    path, ready, go = tmp_path / 'd.h5', tmp_path / 'ready', tmp_path / 'go'
    child = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import pathlib, sys, time
        from smilfit.datasets.hdf5_format import DatasetWriter
        sys.path.insert(0, {str(HERE)!r})
        from test_hdf5_format import C, NAMES, make_batch
        with DatasetWriter({str(path)!r}, keypoint_names=NAMES, num_views=C) as w:
            w.add_session('s0', ['a', 'b', 'c'])
            w.add_samples(make_batch(7, images=False))
            pathlib.Path({str(ready)!r}).touch()
            while not pathlib.Path({str(go)!r}).exists():
                time.sleep(0.02)
            w.commit()
        ''')])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(DatasetBusyError):
            write(path, [make_batch(2, images=False)], overwrite=True)
        assert partial_path(path).exists()          # the live file was not removed
    finally:
        go.touch()
        assert child.wait(60) == 0
    assert len(DatasetReader(path)) == 7


def test_a_partial_file_nobody_holds_is_written_over_with_a_warning(tmp_path):
    path = tmp_path / 'd.h5'
    partial_path(path).write_bytes(b'left by a run killed mid-write')
    assert not writer_active(partial_path(path))
    with pytest.warns(UserWarning, match='left by an earlier run'):
        write(path, [make_batch(4, images=False)])
    assert len(DatasetReader(path)) == 4 and not partial_path(path).exists()


def test_an_aborted_writer_does_not_remove_the_next_writers_file(tmp_path):
    path = tmp_path / 'd.h5'
    first = open_writer(path)
    first.abort()
    second = open_writer(path)
    first.abort()                                # again, after the second took the path
    assert partial_path(path).exists() and writer_active(partial_path(path))
    second.add_session('s0', ['a', 'b', 'c'])
    second.add_samples(make_batch(2, images=False))
    second.commit()
    assert len(DatasetReader(path)) == 2


def test_a_refused_resume_keeps_the_partial_file_and_frees_it(tmp_path):
    """A resume whose names differ from the partial file's is refused; the file stays
    for the right resume, and is not left locked."""
    path = tmp_path / 'd.h5'
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
            w.add_session('s0', ['a', 'b', 'c'])
            w.add_samples(make_batch(3, images=False))
            raise KeyboardInterrupt
    with pytest.raises(Exception, match='keypoint_names differ'):
        DatasetWriter(path, keypoint_names=NAMES[::-1], num_views=C, resume=True).open()
    assert partial_path(path).exists() and not writer_active(partial_path(path))
    w = open_writer(path, resume=True)
    assert w.num_samples == 3
    w.abort()


def test_wait_for_writer_returns_once_the_writer_is_done_and_times_out_while_it_is_not(
        tmp_path):
    path = tmp_path / 'd.h5'
    w = open_writer(path)
    with pytest.raises(TimeoutError, match='still being written'):
        wait_for_writer(partial_path(path), timeout_s=0.2, poll_s=0.05)
    timer = threading.Timer(0.3, w.abort)
    timer.start()
    wait_for_writer(partial_path(path), timeout_s=30, poll_s=0.05)
    timer.join()
    assert not partial_path(path).exists()
    wait_for_writer(partial_path(path), timeout_s=0)      # no file: nothing to wait for


def test_preparing_a_dataset_another_process_is_making_waits_and_uses_it(tmp_path, capsys):
    """Two jobs of one array preparing the same data.path: the second waits for the
    first, then uses the dataset the first made (its record written with it), or makes
    it where the first gave up."""
    from smilfit.apis.fitting import prepare_data
    from smilfit.datasets.provenance import read_source
    path = tmp_path / 'synthetic.h5'
    cfg = dict(data=dict(path=str(path), synthetic=dict(
        num_sessions=1, frames_per_session=2, num_views=2, image_size=32, seed=3)))
    holder = open_writer(path)           # "the other process", mid-write

    def finish():
        holder.abort()
        prepare_data(cfg, progress=False)       # the other process's whole run

    timer = threading.Timer(0.5, finish)
    timer.start()
    prepare_data(cfg, progress=False, wait_s=60)
    timer.join()
    assert 'waiting for it' in capsys.readouterr().err
    assert read_source(path) is not None and len(DatasetReader(path)) == 2


def test_a_process_forked_while_the_file_was_held_does_not_keep_it_locked(tmp_path):
    """A pool of workers forked by a writer shares its descriptor, and with it the lock:
    the commit must free the published file (HDF5 readers lock it shared) while the
    workers live on."""
    import os
    import signal
    path = tmp_path / 'd.h5'
    w = open_writer(path)
    pid = os.fork()
    if pid == 0:                                 # the worker: outlives the commit
        time.sleep(30)
        os._exit(0)
    try:
        w.add_session('s0', ['a', 'b', 'c'])
        w.add_samples(make_batch(2, images=False))
        w.commit()
        assert not writer_active(path)
        assert len(DatasetReader(path)) == 2
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
