"""Synthetic cameras and points shared by the camera tests."""
import math

import numpy as np
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix


def look_at(centers: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(C, 3) camera centres looking at ``target`` -> (C, 3, 3) world->camera rotations.

    Camera +Z towards the target, +Y roughly along world -Z (image "down").
    """
    z = torch.nn.functional.normalize(target - centers, dim=-1)
    up = torch.tensor([0.0, 0.0, -1.0], dtype=centers.dtype).expand_as(z)
    x = torch.nn.functional.normalize(torch.cross(up, z, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-2)


def ring_cameras(C: int = 4, radius: float = 500.0, height: float = 200.0,
                 dtype=torch.float64, seed: int = 0, distortion: bool = True):
    """C cameras on a ring around the origin: K, R, t, dist, image size (W, H)."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(C, dtype=dtype) * (2 * math.pi / C) + 0.3
    centers = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles),
                           torch.full_like(angles, height)], dim=-1)
    centers = centers + 20.0 * torch.randn(C, 3, generator=g, dtype=dtype)
    R = look_at(centers, torch.zeros(3, dtype=dtype))
    t = -(R @ centers[..., None])[..., 0]
    W, H = 1280, 1024
    f = 900.0 + 100.0 * torch.rand(C, generator=g, dtype=dtype)
    K = torch.zeros(C, 3, 3, dtype=dtype)
    K[:, 0, 0] = f
    K[:, 1, 1] = f * (1.0 + 0.02 * torch.rand(C, generator=g, dtype=dtype))
    K[:, 0, 2] = (W - 1) / 2 + 10.0 * torch.randn(C, generator=g, dtype=dtype)
    K[:, 1, 2] = (H - 1) / 2 + 10.0 * torch.randn(C, generator=g, dtype=dtype)
    K[:, 2, 2] = 1.0
    dist = torch.zeros(C, 5, dtype=dtype)
    if distortion:
        dist[:, 0] = -0.25 + 0.05 * torch.rand(C, generator=g, dtype=dtype)
        dist[:, 1] = 0.08 * torch.rand(C, generator=g, dtype=dtype)
        dist[:, 2:4] = 1e-3 * torch.randn(C, 2, generator=g, dtype=dtype)
        dist[:, 4] = -0.01 * torch.rand(C, generator=g, dtype=dtype)
    return K, R, t, dist, (W, H)


def random_points(B: int, N: int, scale: float = 60.0, dtype=torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(B, N, 3, generator=g, dtype=dtype)


def random_rotations(n: int, dtype=torch.float64, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    aa = torch.randn(n, 3, generator=g, dtype=dtype)
    return axis_angle_to_matrix(aa)


def cv2_rvec(R: torch.Tensor) -> np.ndarray:
    import cv2
    return cv2.Rodrigues(R.detach().cpu().numpy().astype(np.float64))[0]
