"""LossWeightCurriculumHook: schedule parsing, weights at a step, DDP unwrapping, resume,
and a real training run (epoch- and iteration-based) through tools/train.py."""
import logging
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from smilfit.cli import train as train_cli
from smilfit.engine.hooks import LossWeightCurriculumHook, unwrap_model
from smilfit.engine.hooks.loss_weight_curriculum import parse_schedule
from smilfit.registry import HOOKS, MODEL_WRAPPERS
from tests.engine.test_train_tool import ToyModel, unique_name, write_config

SCHEDULE = {0: dict(fit=1.0, l2=0.0), 2: dict(l2=0.5), '5': dict(fit=0.25, l2=2.0)}


@MODEL_WRAPPERS.register_module(name='CurriculumTestWrapper', force=True)
class _Wrapper(nn.Module):
    """Stands for DDP: is_model_wrapper() knows it, the model is ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _runner(model, epoch=0, iteration=0, loop_cls=EpochBasedTrainLoop):
    loop = loop_cls.__new__(loop_cls)  # only its type matters to the hook
    return SimpleNamespace(model=model, epoch=epoch, iter=iteration, train_loop=loop,
                           logger=logging.getLogger('curriculum-test'))


@pytest.fixture(autouse=True)
def _isolated_default_scope(monkeypatch):
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict(DefaultScope._instance_dict))


# --- schedule ------------------------------------------------------------------------

def test_registered_and_built_from_config():
    hook = HOOKS.build(dict(type='LossWeightCurriculumHook', schedule=SCHEDULE, by_epoch=False))
    assert isinstance(hook, LossWeightCurriculumHook) and not hook.by_epoch
    assert [step for step, _ in hook.schedule] == [0, 2, 5]  # '5' (JSON-style) -> 5
    assert hook.loss_names == ['fit', 'l2']


@pytest.mark.parametrize('step, expected', [
    (0, dict(fit=1.0, l2=0.0)),
    (1, dict(fit=1.0, l2=0.0)),
    (2, dict(fit=1.0, l2=0.5)),   # entry 2 changes l2 only; fit stays from entry 0
    (4, dict(fit=1.0, l2=0.5)),
    (5, dict(fit=0.25, l2=2.0)),
    (100, dict(fit=0.25, l2=2.0)),
])
def test_weights_at_step(step, expected):
    assert LossWeightCurriculumHook(SCHEDULE).weights_at(step) == expected


def test_weights_before_first_entry_are_left_alone():
    hook = LossWeightCurriculumHook({3: dict(l2=1.0)})
    assert hook.weights_at(2) == {}
    model = ToyModel(loss_weights=dict(fit=1.0, l2=0.125))
    hook.before_train_epoch(_runner(model, epoch=2))
    assert model.loss_weights == dict(fit=1.0, l2=0.125)
    hook.before_train_epoch(_runner(model, epoch=3))
    assert model.loss_weights == dict(fit=1.0, l2=1.0)


@pytest.mark.parametrize('schedule, error, match', [
    ({}, ValueError, 'non-empty dict'),
    ([(0, dict(fit=1.0))], ValueError, 'non-empty dict'),
    ({-1: dict(fit=1.0)}, ValueError, "key -1 is not a non-negative integer"),
    ({1.5: dict(fit=1.0)}, ValueError, 'key 1.5'),
    ({True: dict(fit=1.0)}, TypeError, 'is a bool'),
    ({0: dict(fit=1.0), '0': dict(fit=2.0)}, ValueError, 'step 0 appears twice'),
    ({0: {}}, ValueError, r"schedule\[0\] must be a non-empty dict"),
    ({0: dict(fit=-1.0)}, ValueError, r"schedule\[0\]\['fit'\] = -1.0"),
    ({0: dict(fit=float('nan'))}, ValueError, 'finite non-negative'),
    ({0: dict(fit='1')}, ValueError, "'1' is not a finite"),
    ({0: {3: 1.0}}, TypeError, 'loss name 3'),
])
def test_bad_schedules_are_refused(schedule, error, match):
    with pytest.raises(error, match=match):
        parse_schedule(schedule)


# --- hook on a model --------------------------------------------------------------------

def test_applies_to_unwrapped_ddp_model():
    model = ToyModel()
    wrapped = _Wrapper(model)
    assert unwrap_model(wrapped) is model and unwrap_model(model) is model
    hook = LossWeightCurriculumHook(SCHEDULE)
    runner = _runner(wrapped, epoch=2)
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    assert model.loss_weights == dict(fit=1.0, l2=0.5)


def test_resume_derives_weights_from_current_epoch():
    """A fresh hook (a resumed process) at epoch 6 sets what the schedule says at 6."""
    model = ToyModel()
    hook = LossWeightCurriculumHook(SCHEDULE)
    hook.before_train_epoch(_runner(model, epoch=6))
    assert model.loss_weights == dict(fit=0.25, l2=2.0)


def test_by_iter_applies_before_each_iteration():
    model = ToyModel()
    hook = LossWeightCurriculumHook(SCHEDULE, by_epoch=False)
    seen = []
    for it in range(7):
        runner = _runner(model, iteration=it, loop_cls=IterBasedTrainLoop)
        hook.before_train_epoch(runner)  # no-op when by iteration
        hook.before_train_iter(runner, batch_idx=it)
        seen.append(model.loss_weights['l2'])
    assert seen == [0.0, 0.0, 0.5, 0.5, 0.5, 2.0, 2.0]


def test_unknown_loss_name_is_an_error():
    hook = LossWeightCurriculumHook({0: dict(fit=1.0), 4: dict(kp2d=1.0, silhouette=0.1)})
    with pytest.raises(ValueError, match=r"unknown loss\(es\) \['kp2d', 'silhouette'\]; "
                                         r"ToyModel has loss weights \['fit', 'l2'\]"):
        hook.before_train(_runner(ToyModel()))


def test_model_without_loss_weights_is_an_error():
    with pytest.raises(TypeError, match='needs a `loss_weights` dict'):
        LossWeightCurriculumHook(SCHEDULE).before_train(_runner(nn.Linear(2, 1)))


def test_by_epoch_on_iteration_loop_is_an_error():
    hook = LossWeightCurriculumHook(SCHEDULE, by_epoch=True)
    with pytest.raises(ValueError, match='set by_epoch=False'):
        hook.before_train(_runner(ToyModel(), loop_cls=IterBasedTrainLoop))


# --- real runs through tools/train.py --------------------------------------------------------

def _train(tmp_path, body, *options):
    cfg_file = write_config(tmp_path / 'toy.py', body)
    args = [str(cfg_file), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options', f'experiment_name={unique_name()}', *options]
    cfg = train_cli.build_config(train_cli.build_parser().parse_args(args))
    runner = train_cli.build_runner(cfg)
    runner.train()
    return runner.model.used_weights


def test_epoch_curriculum_in_training(tmp_path):
    used = _train(tmp_path, """\
        custom_hooks = [dict(type='LossWeightCurriculumHook',
                             schedule={0: dict(l2=0.0), 1: dict(l2=0.5), 2: dict(fit=0.5)})]
        train_cfg = dict(by_epoch=True, max_epochs=3)
        """)
    per_epoch = [used[4 * e:4 * e + 4] for e in range(3)]  # 4 iterations per epoch
    assert len(used) == 12
    assert all(w == dict(fit=1.0, l2=0.0) for w in per_epoch[0])
    assert all(w == dict(fit=1.0, l2=0.5) for w in per_epoch[1])
    assert all(w == dict(fit=0.5, l2=0.5) for w in per_epoch[2])


def test_iteration_curriculum_in_training(tmp_path):
    used = _train(tmp_path, """\
        custom_hooks = [dict(type='LossWeightCurriculumHook', by_epoch=False,
                             schedule={3: dict(l2=0.25)})]
        train_cfg = dict(by_epoch=False, max_iters=5)
        train_dataloader = dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='TrainToolToyDataset', size=32),
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate'))
        default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=5, by_epoch=False))
        log_processor = dict(window_size=1, by_epoch=False)
        """)
    assert [w['l2'] for w in used] == [0.0, 0.0, 0.0, 0.25, 0.25]
