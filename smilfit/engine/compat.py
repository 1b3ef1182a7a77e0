"""Fixes that make mmengine 0.10.7 work on today's torch, Python and setuptools.

Two steps, so that fitting does not pay for mmengine's runner side: its ``mmengine.model``,
``mmengine.optim``, ``mmengine.hooks`` and ``mmengine.runner`` modules import
``torch.distributed.fsdp`` and ``torch.distributed.tensor`` (about 1 s, a third of
``tools/fit.py``'s start-up), and fitting uses none of them.

- :func:`apply_core` runs when this module is imported (:mod:`smilfit.registry`, which
  every smilfit component imports, imports it), so every process that builds anything of
  smilfit -- spawned dataloader and DDP workers included -- has the fixes that need only
  mmengine's config, dist, fileio, logging and utils modules (1, 2 for ``init_dist``, 3, 4,
  6 for ``LocalBackend.put``, 8).
- :func:`apply` applies every fix, the runner-side ones too (2 for
  ``MMDistributedDataParallel``, 5, 6 for the checkpoint hook and ``find_latest_checkpoint``,
  7 for the checkpoint loaders of ``mmengine.runner.checkpoint``).
  :mod:`smilfit.engine.hooks` calls it on import, and every runner-side registry of
  :mod:`smilfit.registry` (runners, loops, hooks, model wrappers, optimizers, optimizer
  wrappers and constructors, parameter schedulers, log processors) names
  ``smilfit.engine.hooks`` as its location, so a Runner, or an optimizer built by name,
  has them before it is built; :func:`smilfit.utils.register_all_modules` imports it too.

Both are idempotent: a second call changes nothing. Each fix says what breaks, why, and how
it is fixed; the only state is the patches themselves.

1. ``Runner(resume=True)`` / ``load_checkpoint`` under torch's ``weights_only=True``
   default: allow-list exactly the globals an mmengine checkpoint needs.
2. Distributed training on CPU: gloo instead of nccl, no ``torch.cuda.set_device``,
   no ``device_ids`` for a CPU model (:func:`init_dist_cpu_safe`,
   :func:`cpu_model_wrapper_cfg`).
3. ``pkg_resources`` is gone from setuptools >= 81: mmengine's package helpers are
   re-implemented on :mod:`importlib.metadata`.
4. Configs with plain ``import os`` on Python >= 3.11 were parsed as lazy-import
   configs and failed.
5. torch's optimizers reach mmengine's root ``OPTIMIZERS`` (and so smilfit's child
   registry) only once ``mmengine.optim`` is imported: :func:`apply` imports it.
6. Checkpoints that survive a kill: local files are written atomically, the oldest
   checkpoint is removed only after the new one is complete, ``last_checkpoint`` is
   written atomically, and resuming falls back to the newest complete checkpoint when
   ``last_checkpoint`` names a missing or unreadable file. A fix here rather than a
   ``CheckpointHook`` subclass: every config (shipped or a user's, naming mmengine's
   ``CheckpointHook``) gets it without a change.
7. mmengine loads ``load_from``/``--resume`` checkpoints with a bare ``torch.load`` (its
   refusals advise ``weights_only=False``) and URLs through
   ``torch.hub.load_state_dict_from_url``, which unpickles with ``weights_only=False``:
   both go through :mod:`smilfit.engine.checkpoint_io` instead.
8. More ranks than visible GPUs (CPU fitting sharded by ``torchrun`` on a GPU machine):
   mmengine's logger names its file after ``CUDA_VISIBLE_DEVICES[LOCAL_RANK]`` and
   raised ``IndexError`` on every rank beyond the GPU count (seen on a 1-GPU machine with
   2 ranks); such a rank is named by its local rank instead.
9. A finished ``Runner.train``/``val``/``test`` ends its data loaders' worker processes
   (:func:`release_loader_workers`); left to the garbage collector, each stalled 5 s.
"""
import contextlib
import functools
import importlib.metadata as importlib_metadata
import importlib.util
import inspect
import os
import os.path as osp
import pickle
import re
import sys
from typing import Iterator, Optional

import numpy as np
import torch

import mmengine.config.config as mm_config
import mmengine.config.utils as mm_config_utils
import mmengine.dist.utils as mm_dist_utils
import mmengine.fileio.backends.local_backend as mm_local_backend
import mmengine.utils as mm_utils
import mmengine.utils.package_utils as mm_package_utils
from mmengine.device import get_device
from mmengine.logging.history_buffer import HistoryBuffer

from smilfit.utils.atomic import atomic_open
from smilfit.engine.checkpoint_io import load_checkpoint_file, load_checkpoint_url

__all__ = ['apply', 'apply_core', 'init_dist_cpu_safe', 'cpu_model_wrapper_cfg',
           'release_loader_workers', 'weights_only_safe_globals']

_MARK = '_smilfit_compat'  # attribute set on every replacement function


def _mark(fn):
    setattr(fn, _MARK, True)
    return fn


def _is_patched(fn) -> bool:
    return getattr(fn, _MARK, False)


# 1. Checkpoints under weights_only=True ---------------------------------------
# What breaks: torch >= 2.6 loads with ``weights_only=True`` by default and mmengine's
# ``CheckpointLoader.load_from_local`` calls ``torch.load`` without the argument, so
# resuming fails on the message hub's log history: ``HistoryBuffer`` objects holding
# numpy arrays (``_reconstruct``, ``ndarray``, ``dtype`` and the dtype's class, which
# the unpickler's BUILD checks) and numpy scalars (``scalar``). HistoryBuffer also
# pickles its statistics methods, which protocol 2 writes as
# ``getattr(HistoryBuffer, 'mean')``.
# Why the names: the weights-only unpickler matches a GLOBAL by the string
# ``f'{module}.{name}'`` written in the pickle, not by object identity. numpy 2 writes
# ``numpy._core.multiarray``, numpy 1 wrote ``numpy.core.multiarray``; both are
# registered (``(obj, 'dotted.name')`` form) so checkpoints of either load.
# How: ``torch.serialization.add_safe_globals`` with only these objects; weights_only
# stays True and everything else is still refused. ``builtins.getattr`` is NOT
# allowed: the name is bound to :func:`_history_buffer_getattr`, which resolves only
# HistoryBuffer's statistics methods and refuses anything else.

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name: str):
    """``builtins.getattr`` as seen by weights-only loading: HistoryBuffer methods only."""
    if (isinstance(obj, type) and issubclass(obj, HistoryBuffer) and isinstance(name, str)
            and (name in _HISTORY_BUFFER_STATISTICS or name in obj._statistics_methods)):
        method = getattr(obj, name)
        if inspect.isfunction(method):
            return method
    raise pickle.UnpicklingError(
        f'weights-only load refuses getattr({obj!r}, {name!r}): smilfit allow-lists '
        'getattr only for mmengine HistoryBuffer statistics methods')


def weights_only_safe_globals() -> list:
    """The globals (objects or ``(object, 'module.name')`` pairs) fix 1 allow-lists."""
    try:
        from numpy._core import multiarray  # numpy >= 2 (and the 1.26 forward shim)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    safe = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        safe.append((multiarray._reconstruct, f'{module}._reconstruct'))
        safe.append((multiarray.scalar, f'{module}.scalar'))
    # Dtype classes of the numeric and bool dtypes (``numpy.dtypes.Float64DType`` ...):
    # a dtype instance is BUILD-ed, which needs its class allow-listed.
    for cls in vars(np.dtypes).values():
        if (isinstance(cls, type) and issubclass(cls, np.dtype)
                and issubclass(getattr(cls, 'type', object), (np.number, np.bool_))):
            safe.append(cls)
    return safe


def _allow_checkpoint_globals() -> None:
    # add_safe_globals adds to a set: calling it twice registers nothing new.
    torch.serialization.add_safe_globals(weights_only_safe_globals())


# 2. Distributed training on CPU -------------------------------------------------
# What breaks: ``mmengine.dist.init_dist`` -> ``_init_dist_pytorch`` / ``_init_dist_slurm``
# / ``_init_dist_mpi`` call ``torch.cuda.set_device(local_rank)`` unconditionally
# (RuntimeError without a GPU) and the Runner's default ``dist_cfg`` asks for nccl,
# which has no CPU support. Then ``Runner.wrap_model`` passes
# ``device_ids=[LOCAL_RANK]`` to ``MMDistributedDataParallel``, which torch refuses for a
# CPU module.
# How: the three ``mmengine.dist.utils._init_dist_*`` functions (looked up at call time
# by ``init_dist``, so the Runner gets the fix too) are wrapped: with no accelerator,
# nccl becomes gloo and ``torch.cuda.set_device`` is a no-op for the duration of the
# call. ``MMDistributedDataParallel.__init__`` drops ``device_ids`` when the module
# lives on the CPU. :func:`init_dist_cpu_safe` is the entry point for scripts that
# initialise outside a Runner; :func:`cpu_model_wrapper_cfg` is the explicit config
# form of the DDP fix (``model_wrapper_cfg = cpu_model_wrapper_cfg()`` in a config).

def _no_accelerator() -> bool:
    return get_device() in ('cpu', 'mps')


@contextlib.contextmanager
def _cuda_set_device_disabled() -> Iterator[None]:
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_safe_init(init_fn):
    """Wrap one of mmengine's ``_init_dist_<launcher>(backend, ...)`` functions."""
    @functools.wraps(init_fn)
    def wrapper(backend, *args, **kwargs):
        if not _no_accelerator():
            return init_fn(backend, *args, **kwargs)
        if backend in (None, 'nccl'):
            backend = 'gloo'
        with _cuda_set_device_disabled():
            return init_fn(backend, *args, **kwargs)
    return _mark(wrapper)


def init_dist_cpu_safe(launcher: str, backend: Optional[str] = None, cpu: bool = False,
                       **kwargs) -> None:
    """``mmengine.dist.init_dist`` that also works without a GPU.

    Args:
        launcher: 'pytorch', 'slurm' or 'mpi'.
        backend: torch.distributed backend; None picks nccl with CUDA, gloo without.
            nccl is replaced by gloo when no accelerator is present.
        cpu: the processes compute on the CPU although the machine may have GPUs (CPU
            fitting sharded over more processes than GPUs): gloo, and no
            ``torch.cuda.set_device(local_rank)``, which fails for a local rank beyond the
            GPU count (seen on a 1-GPU machine with 2 ranks).
        **kwargs: passed on to ``init_dist`` (e.g. ``timeout`` in seconds).
    """
    if cpu:
        with _cuda_set_device_disabled():
            mm_dist_utils.init_dist(launcher, backend=backend or 'gloo', **kwargs)
        return
    if backend is None:
        backend = 'gloo' if _no_accelerator() else 'nccl'
    # The patched ``_init_dist_*`` turn nccl into gloo and skip set_device on CPU.
    mm_dist_utils.init_dist(launcher, backend=backend, **kwargs)


def cpu_model_wrapper_cfg(**kwargs) -> dict:
    """``model_wrapper_cfg`` for a Runner that trains with DDP on the CPU.

    ``device_ids=None`` overrides the ``[LOCAL_RANK]`` that ``Runner.wrap_model`` would
    add; ``kwargs`` (e.g. ``find_unused_parameters=True``) override the defaults.
    """
    cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
               find_unused_parameters=False)
    cfg.update(kwargs)
    return cfg


def _patch_ddp_init() -> None:
    from mmengine.model.wrappers import MMDistributedDataParallel  # runner side (apply)
    original = MMDistributedDataParallel.__init__
    if _is_patched(original):
        return

    @functools.wraps(original)
    def __init__(self, module, *args, **kwargs):
        if kwargs.get('device_ids') is not None and all(
                t.device.type == 'cpu' for t in module.parameters()):
            kwargs['device_ids'] = None  # torch: CPU modules take no device_ids
        original(self, module, *args, **kwargs)

    MMDistributedDataParallel.__init__ = _mark(__init__)


def _patch_dist_init() -> None:
    for name in ('_init_dist_pytorch', '_init_dist_slurm', '_init_dist_mpi'):
        fn = getattr(mm_dist_utils, name)
        if not _is_patched(fn):
            setattr(mm_dist_utils, name, _cpu_safe_init(fn))


# 3. pkg_resources is gone ----------------------------------------------------------
# What breaks: ``mmengine.utils.package_utils.is_installed``, ``get_installed_path``
# and ``package2module`` import ``pkg_resources``, removed from setuptools >= 81; they
# serve ``Config._get_cfg_path`` (``_base_ = 'mmdet::...'``), lazy-import configs
# (``with read_base(): from mmdet.configs...``), ``mmengine.hub`` and
# ``install_package``.
# How: the three functions are re-implemented on importlib.metadata, with the same
# contract, and rebound wherever mmengine bound them by name
# (``mmengine.utils``, ``mmengine.config.config``, ``mmengine.hub.hub`` when imported;
# modules imported later pick the new ones up from ``mmengine.utils``). Applied
# whether or not a ``pkg_resources`` is installed, so behaviour does not depend on it.

def _module_spec_path(package: str) -> Optional[str]:
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.origin is None:
        raise RuntimeError(f'{package} is a namespace package, which is invalid for '
                           '`get_install_path`')
    return osp.dirname(spec.origin)


def is_installed(package: str) -> bool:
    """Whether a distribution (or, failing that, an importable module) is installed."""
    try:
        importlib_metadata.distribution(package)
        return True
    except importlib_metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def package2module(package: str) -> str:
    """Top-level module of a distribution (``top_level.txt``, else the RECORD)."""
    dist = importlib_metadata.distribution(package)
    top_level = dist.read_text('top_level.txt')
    if top_level and top_level.split():
        return top_level.split()[0]
    modules = [m for m, dists in importlib_metadata.packages_distributions().items()
               if dist.metadata['Name'] in dists]
    if modules:
        return sorted(modules)[0]
    raise ValueError(f'can not infer the module name of {package}')


def get_installed_path(package: str) -> str:
    """Directory of an installed package (e.g. ``.../site-packages/mmdet``)."""
    try:
        dist = importlib_metadata.distribution(package)
    except importlib_metadata.PackageNotFoundError:
        path = _module_spec_path(package)  # e.g. a package on PYTHONPATH only
        if path is None:
            raise
        return path
    location = str(dist.locate_file(''))
    possible_path = osp.join(location, package)
    if osp.exists(possible_path):
        return possible_path
    module = package2module(package)
    module_path = osp.join(location, module)
    if osp.exists(module_path):
        return module_path
    # Editable installs keep the sources elsewhere: ask the import system.
    return _module_spec_path(module) or module_path


def _patch_package_utils() -> None:
    replacements = dict(is_installed=is_installed, get_installed_path=get_installed_path,
                        package2module=package2module)
    for fn in replacements.values():
        _mark(fn)
    targets = [mm_package_utils, mm_utils, mm_config]
    hub = sys.modules.get('mmengine.hub.hub')
    if hub is not None:
        targets.append(hub)
    for module in targets:
        for name, fn in replacements.items():
            if hasattr(module, name):
                setattr(module, name, fn)


# 4. Plain imports in configs on Python >= 3.11 -------------------------------------
# What breaks: a config with ``import os`` (then ``work_dir = os.path.join(...)``)
# raises a bare RuntimeError in ``Config.fromfile``. ``Config._is_lazy_import`` asks
# ``mmengine.config.utils._is_builtin_module('os')``, which trusts only modules whose
# spec origin is a file under the interpreter's prefix; Python 3.11 deep-freezes
# ``os`` (origin 'frozen') and a virtualenv's prefix is not the stdlib's, so ``os``
# counts as a third-party module, the file is parsed as a lazy-import config
# (``Config._parse_lazy_import``) and ``os.path.join`` is called on a LazyObject.
# How: ``_is_builtin_module`` also accepts every name in ``sys.stdlib_module_names``.
# The normal parser (``Config._file2dict``) then drops module and function objects
# from the config dict, so ``Config.dump``/``pretty_text`` work.

def _patch_is_builtin_module() -> None:
    original = mm_config_utils._is_builtin_module
    if _is_patched(original):
        return

    @functools.wraps(original)
    def _is_builtin_module(module_name: str) -> bool:
        if not module_name.startswith('.') and \
                module_name.partition('.')[0] in sys.stdlib_module_names:
            return True
        return original(module_name)

    _mark(_is_builtin_module)
    mm_config_utils._is_builtin_module = _is_builtin_module
    mm_config._is_builtin_module = _is_builtin_module


# 5. torch optimizers in the registry --------------------------------------------
# What breaks: mmengine registers torch's optimizers in its root ``OPTIMIZERS`` when
# ``mmengine.optim`` is imported, and nothing else imports it before a config asks for
# ``dict(type='Adam')``, so smilfit's child registry does not find them.
# How: :func:`apply` imports ``mmengine.optim``; ``OPTIMIZERS`` looks up its location
# (``smilfit.engine.hooks``, which calls :func:`apply`) before its first build.

def _register_torch_optimizers() -> None:
    import mmengine.optim  # noqa: F401  (registers torch optimizers on import)


# 6. Checkpoints that survive a kill ------------------------------------------------
# What breaks: ``CheckpointHook._save_checkpoint_with_step`` removes the oldest kept
# checkpoint *before* saving the new one, ``LocalBackend.put`` writes the new one in
# place, and ``last_checkpoint`` is rewritten in place. A ``kill -9`` during the write
# (checkpoints are 100+ MB) leaves the old checkpoint deleted, the new one truncated and
# ``last_checkpoint`` naming a deleted file, so ``--resume`` fails with FileNotFoundError
# and all progress is lost.
# Why here and not a CheckpointHook subclass: every config (shipped or a user's, with
# mmengine's ``CheckpointHook`` by name) and mmengine's other writers through
# ``LocalBackend.put`` get the fix without a config change.
# How: ``LocalBackend.put`` writes through a temporary file that is renamed into place
# (smilfit.utils.atomic), the hook removes outdated checkpoints only after the new one is
# complete and writes ``last_checkpoint`` atomically, and the runner's
# ``find_latest_checkpoint`` checks the file ``last_checkpoint`` names and otherwise
# takes the newest complete ``*.pth`` in the work dir. Partial files of killed writers are
# removed at the next save.

def _atomic_put(self, obj: bytes, filepath) -> None:
    os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
    with atomic_open(filepath, 'wb') as f:
        f.write(obj)


def _save_checkpoint_with_step(self, runner, step, meta):
    from mmengine.dist import is_main_process
    outdated = []
    if self.max_keep_ckpts > 0:
        # _save_checkpoint and _save_best_checkpoint may both save one step
        if not (len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
    ckpt_filename = self.filename_tmpl.format(step)
    self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', self.last_ckpt)
    runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                           save_optimizer=self.save_optimizer,
                           save_param_scheduler=self.save_param_scheduler, meta=meta,
                           by_epoch=self.by_epoch, backend_args=self.backend_args,
                           **self.args)
    if not is_main_process():
        return
    with atomic_open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(self.last_ckpt)
    for old in outdated:  # only now that the new checkpoint is complete
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed checkpoints are directories
            self.file_backend.rmtree(path)
    if osp.isdir(self.out_dir):
        _remove_dead_partials(self.out_dir)


# smilfit.utils.atomic's temporary files: '.<name>.<pid>.<n>.tmp'
_PARTIAL = re.compile(r'^\..+\.pth\.(\d+)\.\d+\.tmp$')


def _remove_dead_partials(folder: str) -> None:
    """Remove partial checkpoints left by killed writers (their process is gone), which
    would otherwise keep a checkpoint's worth of disk per kill."""
    for name in os.listdir(folder):
        match = _PARTIAL.match(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(osp.join(folder, name))
        except PermissionError:  # alive, another user's
            pass


def _complete_checkpoint(path: str) -> bool:
    import zipfile
    return osp.isfile(path) and zipfile.is_zipfile(path)


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The checkpoint ``path/last_checkpoint`` names if it is complete, else the newest
    complete ``*.pth`` in ``path`` (None if there is none)."""
    save_file = osp.join(path, 'last_checkpoint')
    if osp.exists(save_file):
        with open(save_file) as f:
            named = f.read().strip()
        if _complete_checkpoint(named):
            return named
    candidates = [osp.join(path, n) for n in os.listdir(path)] if osp.isdir(path) else []
    complete = [c for c in candidates if c.endswith('.pth') and _complete_checkpoint(c)]
    return max(complete, key=osp.getmtime) if complete else None


def _patch_local_put() -> None:
    mm_local_backend.LocalBackend.put = _mark(_atomic_put)


def _patch_checkpoint_hook() -> None:
    # runner side (apply): these modules import mmengine.optim and torch.distributed.fsdp
    import mmengine.hooks.checkpoint_hook as mm_checkpoint_hook
    import mmengine.runner.runner as mm_runner
    mm_checkpoint_hook.CheckpointHook._save_checkpoint_with_step = _mark(
        _save_checkpoint_with_step)
    mm_runner.find_latest_checkpoint = _mark(find_latest_checkpoint)


# 7. mmengine's checkpoint loaders ----------------------------------------------------
# What breaks: ``CheckpointLoader``'s local loader (``load_from``, ``--resume``, a model's
# ``init_cfg=dict(type='Pretrained', checkpoint=...)``) calls ``torch.load`` without
# checks, so a truncated, garbage or refused file surfaces as a raw RuntimeError/
# UnpicklingError whose text advises ``weights_only=False``; its http(s) loader (also used
# by ``torchvision://``, ``open-mmlab://`` and ``mmcls://``) calls
# ``torch.hub.load_state_dict_from_url``, whose default ``weights_only=False`` lets a
# downloaded file run code.
# How: the local and http(s) schemes are registered again (``force=True``) with loaders
# that use :func:`~smilfit.engine.checkpoint_io.load_checkpoint_file` (``weights_only=True``,
# one :class:`CheckpointError` naming the file), and ``load_from_http`` is rebound in
# ``mmengine.runner.checkpoint`` so the schemes that call it by name get it too.

def _safe_load_from_local(filename, map_location=None):
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def _safe_load_from_http(filename, map_location=None, model_dir=None, progress=False):
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:  # rank 0 downloads; the others read its cached file
        ckpt = load_checkpoint_url(filename, model_dir, map_location, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            ckpt = load_checkpoint_url(filename, model_dir, map_location, progress)
    return ckpt


# mmengine logs ``name[10:]`` of the loader ("Loads checkpoint by local backend").
_safe_load_from_local.__name__ = 'load_from_local'
_safe_load_from_http.__name__ = 'load_from_http'


def _patch_checkpoint_loaders() -> None:
    import mmengine.runner.checkpoint as mm_checkpoint
    loader = mm_checkpoint.CheckpointLoader
    loader._register_scheme('', _mark(_safe_load_from_local), force=True)
    loader._register_scheme(('http://', 'https://'), _mark(_safe_load_from_http), force=True)
    mm_checkpoint.load_from_http = _safe_load_from_http


# 8. More ranks than GPUs ----------------------------------------------------------------
def _patch_logger_device_id() -> None:
    from mmengine.logging import logger as mm_logger
    original = mm_logger._get_device_id
    if _is_patched(original):
        return

    @functools.wraps(original)
    def _get_device_id():
        try:
            return original()
        except IndexError:
            return int(os.getenv('LOCAL_RANK', '0'))

    mm_logger._get_device_id = _mark(_get_device_id)


# 9. Loader workers of a finished run ----------------------------------------------------
# What breaks: a runner is a reference cycle, so the loader iterators of its loops (the
# train loop's infinite one, persistent workers) are freed by the garbage collector,
# which closes their queues (weakref callbacks) before the iterator's ``__del__`` tells
# the workers to stop: every worker misses the signal and is joined after a 5 s timeout,
# at some later collection (40 s with 8 workers, seen between two trainings).
# How: the runner's ``train``, ``val`` and ``test`` end the workers when they return; a
# loader iterated again starts new ones.
def release_loader_workers(runner) -> None:
    """End the worker processes of ``runner``'s data loaders now (idempotent)."""
    for loop in (getattr(runner, name, None) for name in ('_train_loop', '_val_loop',
                                                             '_test_loop')):
        loader = getattr(loop, 'dataloader', None)
        for iterator in (getattr(getattr(loop, 'dataloader_iterator', None), '_iterator',
                                 None), getattr(loader, '_iterator', None)):
            if hasattr(iterator, '_shutdown_workers'):
                iterator._shutdown_workers()
        if getattr(loader, '_iterator', None) is not None:
            loader._iterator = None


def _patch_runner_worker_release() -> None:
    from mmengine.runner import Runner
    for name in ('train', 'val', 'test'):
        original = getattr(Runner, name)
        if _is_patched(original):
            continue

        def run(self, _original=original):
            try:
                return _original(self)
            finally:
                release_loader_workers(self)
        setattr(Runner, name, _mark(functools.wraps(original)(run)))


def apply_core() -> None:
    """Apply the fixes that need only mmengine's light modules (config, dist, fileio,
    utils); safe to call more than once. Runs when this module is imported."""
    _allow_checkpoint_globals()
    _patch_dist_init()
    _patch_package_utils()
    _patch_is_builtin_module()
    _patch_local_put()
    _patch_logger_device_id()


def apply() -> None:
    """Apply every fix, the runner-side ones too (imports mmengine's model, optim, hooks
    and runner modules); safe to call more than once."""
    apply_core()
    _patch_ddp_init()
    _register_torch_optimizers()
    _patch_checkpoint_hook()
    _patch_checkpoint_loaders()
    _patch_runner_worker_release()


apply_core()
