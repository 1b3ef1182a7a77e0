# Pretraining on renders of the fitted mouse in the session's own rig (tools/render_rig.py),
# validated on the real held-out blocks; then fine-tune mouse_session_resnet18.py from it:
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
