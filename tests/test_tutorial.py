"""docs/tutorial.ipynb runs from top to bottom (nbclient, a fresh python3 kernel in the
repository root); its cells assert on the fit they make."""
from __future__ import annotations

import pytest

from .conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / 'docs' / 'tutorial.ipynb'


def test_tutorial_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    pytest.importorskip('ipykernel')
    monkeypatch.setenv('SMILFIT_TUTORIAL_DIR', str(tmp_path))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get('outputs') for c in nb.cells if c.cell_type == 'code'), \
        'commit the notebook without outputs'
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name='python3',
                                     resources={'metadata': {'path': str(REPO_ROOT)}})
    client.execute()    # raises CellExecutionError (with the traceback) when a cell fails
    assert (tmp_path / 'fit' / 'fit_results.h5').is_file()
    assert (tmp_path / 'frame0.glb').is_file()
    images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if 'image/png' in o.get('data', {})]
    assert len(images) >= 2      # the overlay of the views and the error plots
