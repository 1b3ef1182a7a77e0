"""Small scenes for the renderer tests: triangles at known pixels, toy cameras."""
import torch

DT = torch.float64


def pixel_camera(f: float = 100.0, height: int = 20, width: int = 24, dtype=DT, C: int = 1):
    """A camera dict (B = 1) with ``K = diag(f, f, 1)``, identity pose: a world point
    ``(u z / f, v z / f, z)`` projects to pixel ``(u, v)``."""
    K = torch.tensor([[f, 0.0, 0.0], [0.0, f, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return dict(K=K.expand(1, C, 3, 3), R=torch.eye(3, dtype=dtype).expand(1, C, 3, 3),
                t=torch.zeros(1, C, 3, dtype=dtype), dist=None, height=height, width=width)


def lift(uv: torch.Tensor, z: float = 2.0, f: float = 100.0) -> torch.Tensor:
    """(..., V, 2) pixels -> (..., V, 3) world points at depth z seen by pixel_camera(f)."""
    zs = torch.full_like(uv[..., :1], z)
    return torch.cat([uv * z / f, zs], dim=-1)


def rot(axis: str, deg: float, dtype=DT) -> torch.Tensor:
    import math
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    m = {'x': [[1, 0, 0], [0, c, -s], [0, s, c]], 'y': [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         'z': [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return torch.tensor(m, dtype=dtype)


def icosphere_like(n_lat: int = 6, n_lon: int = 10, radius: float = 0.3, dtype=DT):
    """A closed UV sphere: (V, 3) vertices and (F, 3) faces."""
    import math
    verts = [[0.0, 0.0, radius]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append([radius * math.sin(th) * math.cos(ph),
                          radius * math.sin(th) * math.sin(ph), radius * math.cos(th)])
    verts.append([0.0, 0.0, -radius])
    faces = []
    for j in range(n_lon):
        faces.append([0, 1 + j, 1 + (j + 1) % n_lon])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a = 1 + i * n_lon + j
            b = 1 + i * n_lon + (j + 1) % n_lon
            faces += [[a, a + n_lon, b], [b, a + n_lon, b + n_lon]]
    last = len(verts) - 1
    base = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces.append([base + j, last, base + (j + 1) % n_lon])
    return torch.tensor(verts, dtype=dtype), torch.tensor(faces)
