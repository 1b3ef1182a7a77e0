"""Content digests of files: what a file holds, whatever its path or times."""
from __future__ import annotations

import hashlib
import os
from typing import Union


def file_sha256(path: Union[str, 'os.PathLike[str]']) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


__all__ = ['file_sha256']
