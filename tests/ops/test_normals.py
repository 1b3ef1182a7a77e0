"""smilfit.ops.normals: one implementation for batched, single-mesh and numpy callers."""
import numpy as np
import torch

from smilfit.ops.normals import face_normals, vertex_normals, vertex_normals_np


def _tetrahedron():
    v = torch.tensor([[0., 0., 0.], [1., 0., 0.], [0., 1., 0.], [0., 0., 1.]], dtype=torch.float64)
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward winding
    return v, f


def test_face_normals_point_outward_with_twice_the_area():
    v, f = _tetrahedron()
    n = face_normals(v[None], f, normalize=False)[0]
    centroid = v.mean(0)
    outward = (v[f].mean(1) - centroid)
    assert ((n * outward).sum(-1) > 0).all()
    np.testing.assert_allclose(n.norm(dim=-1)[:3].numpy(), [1.0, 1.0, 1.0])  # right triangles


def test_batched_unbatched_and_numpy_agree():
    v, f = _tetrahedron()
    batched = vertex_normals(torch.stack([v, 2 * v + 1]), f)
    single = vertex_normals(v, f)
    assert single.shape == (4, 3)
    torch.testing.assert_close(batched[0], single)
    torch.testing.assert_close(batched[1], single)  # scale and shift keep normals
    np.testing.assert_allclose(vertex_normals_np(v.numpy(), f.numpy()), single.numpy())
    np.testing.assert_allclose(single.norm(dim=-1).numpy(), 1.0)
    # The apex (vertex 3) of the tetrahedron: its normal points away from the body.
    expected = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.dot(single[3], expected) > 0
