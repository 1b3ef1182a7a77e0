"""Per-frame meshes reload with the same vertices (in order) and faces."""
import numpy as np
import pytest
import torch
import trimesh

from smilfit.visualization.mesh_export import export_meshes


def _sequence(T=3, V=7):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(T, V, 3)).astype(np.float32)
    # Vertex 6 is used by no face: it must still be kept, in place.
    faces = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0], [1, 3, 5]])
    return vertices, faces


@pytest.mark.parametrize('fmt', ['obj', 'ply'])
def test_meshes_reload_identically(tmp_path, fmt):
    vertices, faces = _sequence()
    paths = export_meshes(tmp_path / 'm', torch.as_tensor(vertices), faces, fmt=fmt)
    assert [p.name for p in paths] == [f'frame_{i:05d}.{fmt}' for i in range(3)]
    for i, path in enumerate(paths):
        mesh = trimesh.load(path, process=False, maintain_order=True, force='mesh')
        np.testing.assert_array_equal(mesh.faces, faces)
        if fmt == 'ply':      # binary float32: bit for bit
            np.testing.assert_array_equal(mesh.vertices.astype(np.float32), vertices[i])
        else:                 # text, 8 decimals
            np.testing.assert_allclose(mesh.vertices, vertices[i], atol=1e-7)
    assert sorted(p.name for p in (tmp_path / 'm').iterdir()) == [p.name for p in paths]


def test_names_and_colours(tmp_path):
    vertices, faces = _sequence(T=2)
    colours = np.zeros((7, 3), dtype=np.uint8)
    colours[:, 0] = 255
    paths = export_meshes(tmp_path, vertices, faces, names=['a', 'b.1'], fmt='ply',
                          vertex_colours=colours)
    assert [p.name for p in paths] == ['a.ply', 'b.1.ply']
    mesh = trimesh.load(paths[1], process=False, force='mesh')
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)


def test_bad_input_is_refused(tmp_path):
    vertices, faces = _sequence(T=2)
    with pytest.raises(ValueError, match='fmt'):
        export_meshes(tmp_path, vertices, faces, fmt='stl')
    with pytest.raises(ValueError, match=r'\(T, V, 3\)'):
        export_meshes(tmp_path, vertices[0], faces)
    with pytest.raises(ValueError, match='faces index vertices'):
        export_meshes(tmp_path, vertices, faces + 5)
    with pytest.raises(ValueError, match='2 frames'):
        export_meshes(tmp_path, vertices, faces, names=['a'])
    with pytest.raises(ValueError, match='letters'):
        export_meshes(tmp_path, vertices, faces, names=['a', '../b'])
    bad = vertices.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r'frames \[1\]'):
        export_meshes(tmp_path, bad, faces)
    assert list(tmp_path.iterdir()) == []
