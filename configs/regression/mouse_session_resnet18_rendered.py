# The first half of rendered pretraining in the session's own rig: the network of
# mouse_session_resnet18.py trained on rendered samples of the fitted mouse
# (tools/render_rig.py: the session's cameras, crops and background; poses drawn around
# the training blocks' fits), validated on the real held-out blocks. Then fine-tune on the
# real frames from this run's weights:
#   python tools/render_rig.py configs/regression/mouse_session_resnet18.py \
#       work_dirs/mouse_fit/fit_results.h5 data/mouse_session/minimal_session_128_renders.h5
#   python tools/train.py configs/regression/mouse_session_resnet18_rendered.py
#   python tools/train.py configs/regression/mouse_session_resnet18.py --cfg-options \
#       load_from=work_dirs/mouse_session_resnet18_rendered/iter_400.pth \
#       train_dataloader.dataset.fit_results=work_dirs/mouse_fit/fit_results.h5
_base_ = ['./mouse_session_resnet18.py']
# every rendered sample trains (they hold no real frame: nothing to hold out)
train_dataloader = dict(dataset=dict(ann_file='minimal_session_128_renders.h5', split=None,
                                     split_by='session'))
work_dir = 'work_dirs/mouse_session_resnet18_rendered'
