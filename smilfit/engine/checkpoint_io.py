"""Load checkpoint files safely, with messages a user can act on.

Every checkpoint smilfit reads (``tools/test.py``, ``tools/infer.py``, ``tools/adapt.py``,
local backbone weights, and through :mod:`smilfit.engine.compat` fix 7 mmengine's
``load_from``/``--resume`` and ``init_cfg`` checkpoints) goes through
:func:`load_checkpoint_file`: ``torch.load`` with
``weights_only=True`` (only tensors, numbers, strings and containers, plus the few mmengine
objects allow-listed in :mod:`smilfit.engine.compat`), never an unrestricted unpickler.
Its failures become one :class:`CheckpointError` that names the file and says what is wrong
(missing, a directory, truncated, not a checkpoint, objects refused). PyTorch's own
refusal message advises switching safe loading off; that advice is never passed on, since
following it for a file from elsewhere lets the file run code.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from smilfit.errors import SmilfitUserError

PathLike = Union[str, 'os.PathLike[str]']

__all__ = ['CheckpointError', 'load_checkpoint_file', 'load_checkpoint_url', 'checkpoint_state_dict']

_REFUSED_GLOBAL = re.compile(r'(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)')


class CheckpointError(SmilfitUserError, ValueError):
    """A checkpoint file cannot be used; the message names the file and the reason."""


def _refusal_reason(err: Exception) -> str:
    match = _REFUSED_GLOBAL.search(str(err))
    if match:
        return f'it holds an object of type {match.group(1)}, which smilfit refuses to load'
    return 'it holds objects that safe loading refuses (only tensors, numbers, strings ' \
           'and containers are accepted)'


def _unreadable(path: Path, err: Exception) -> str:
    if not zipfile.is_zipfile(path):
        # torch.save writes zip archives; a truncated one has lost its central directory.
        return f'{path} is truncated or not a PyTorch checkpoint (its archive cannot be read)'
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f'{path} could not be read as a checkpoint: {text}'


def load_checkpoint_file(path: PathLike, map_location: Any = 'cpu') -> Dict[str, Any]:
    """The dict stored in a checkpoint file, loaded with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, an empty/truncated/garbage file, refused objects, or
            a file that does not hold a dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    if path.is_dir():
        raise CheckpointError(f'checkpoint {path} is a directory, not a checkpoint file')
    if path.stat().st_size == 0:
        raise CheckpointError(f'checkpoint {path} is empty (an interrupted write?)')
    try:
        with warnings.catch_warnings():
            # Garbage read as a pickle makes torch warn about unknown protocols first.
            warnings.simplefilter('ignore', UserWarning)
            ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'GLOBAL' in str(err):
            raise CheckpointError(f'{path} was not loaded: {_refusal_reason(err)}. Only load '
                                  'checkpoints from people you trust; smilfit never '
                                  'executes code from a checkpoint') from None
        raise CheckpointError(_unreadable(path, err)) from None
    except Exception as err:  # noqa: BLE001 - garbage fails in the unpickler in many ways
        raise CheckpointError(_unreadable(path, err)) from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f'{path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    # An OrderedDict state dict keeps its ``_metadata`` (module versions for load_state_dict).
    return ckpt if isinstance(ckpt, dict) else dict(ckpt)


def load_checkpoint_url(url: str, model_dir: Optional[PathLike] = None,
                        map_location: Any = 'cpu', progress: bool = False) -> Dict[str, Any]:
    """The dict stored in a checkpoint at ``url`` (http/https), downloaded once into
    ``model_dir`` (default: torch hub's ``<TORCH_HOME>/hub/checkpoints``) like
    ``torch.hub.load_state_dict_from_url`` does, then loaded by :func:`load_checkpoint_file`
    (torch's function defaults to ``weights_only=False``: a downloaded file could run code).

    Raises:
        CheckpointError: as :func:`load_checkpoint_file`; the message names the cached file.
    """
    from urllib.parse import urlparse
    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / 'checkpoints'
    folder.mkdir(parents=True, exist_ok=True)
    cached = folder / os.path.basename(urlparse(url).path)
    if not cached.exists():
        torch.hub.download_url_to_file(url, str(cached), None, progress=progress)
    return load_checkpoint_file(cached, map_location=map_location)


def checkpoint_state_dict(ckpt: Mapping[str, Any], path: PathLike) -> Dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint (``state_dict``, else the dict itself if it
    holds only tensors), with the ``module.`` prefix of wrapped models removed.

    Raises:
        CheckpointError: no weights in it.
    """
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'{path} holds no model weights (no "state_dict" of tensors)')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
