"""Synthetic scans: points on the true surface, noise level, dropout, reproducibility."""
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.losses.surface import point_to_surface_sq
from smilfit.registration import generate_synthetic_scans

DT = torch.float64


def test_synthetic_scans():
    model = SMILModel(data=demo_model_data(), dtype=DT)
    clean = generate_synthetic_scans(model, 2, 1000, seed=5)
    d2, _ = point_to_surface_sq(clean.points, clean.vertices, model.faces)
    assert d2.max() < 1e-20
    torch.testing.assert_close(clean.normals.norm(dim=-1), torch.ones(2, 1000, dtype=DT))
    assert torch.equal(generate_synthetic_scans(model, 2, 1000, seed=5).points, clean.points)
    noisy = generate_synthetic_scans(model, 2, 1000, noise_std=0.2, dropout=0.25, seed=5)
    assert noisy.mask.sum(1).tolist() == [750, 750]
    assert torch.isnan(noisy.points[~noisy.mask]).all()
    # same draws apart from the noise: per-coordinate residual std is the noise std
    resid = (noisy.points - clean.points)[noisy.mask]
    assert abs(float(resid.std()) - 0.2) < 0.02
    # scans are not the model's vertices: resampled from the surface
    assert not torch.isin(clean.points[0, :, 0], clean.vertices[0, :, 0]).all()
