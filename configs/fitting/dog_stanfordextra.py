# StanfordExtra dogs (single uncalibrated view: 24 keypoints + an annotated silhouette)
# fitted with the builder's quadruped. Ingest first:
#   python tools/ingest_stanfordextra.py \
#       ../shared/data/stanfordextra_sample/StanfordExtra_sample.json \
#       data/stanfordextra_128.h5 --target-size 128
# Camera: the schema's default pinhole of an uncalibrated view (f = max(W, H) of the
# original image, R = I, t = 0); the body's global_orient and transl place the dog in
# front of it. One view has nothing to triangulate: multi_start fits every dog from 8
# upright headings (about 1 m long, placed where it spans the keypoints) through the two
# keypoint stages and keeps the lowest keypoint loss before the silhouette stage.
# Stages: (1) rigid from keypoints, (2) pose + shape from keypoints, (3) pose + shape +
# per-joint log_scale from keypoints and silhouettes (Adam: the silhouette term has no
# least-squares form; Adam on summed per-sample losses keeps samples independent).
# Pixel-unit weights are for 128 x 128 stored images: the keypoint loss is a sum over
# ~20 keypoints of robust squared pixel errors (sigma 12 px), the silhouette loss
# 1 - soft IoU per view, weighted to match.
_base_ = ['../_base_/body_models/quadruped.py']

from smilfit.body_models.quadruped import STANFORDEXTRA_JOINT_LOOKUP as __lookup  # noqa: E402

data = dict(path='data/stanfordextra_128.h5', batch_size=25, joint_lookup=dict(__lookup))
registrant = dict(
    type='SMILRegistrant',
    init='zeros',
    multi_start=dict(num_headings=8, body_extent=1.0, stages=2),
    return_vertices=True,
    handlers=[
        dict(type='Keypoint2DHandler', name='kp2d', source='joints',
             joint_lookup=dict(__lookup),
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=12.0)),
        dict(type='SilhouetteHandler', name='sil', weight=0.0,
             renderer=dict(type='SoftSilhouetteRenderer', sigma=1.0),
             loss=dict(type='SilhouetteLoss', mode='iou')),
        dict(type='ShapePriorHandler', name='shape_prior', weight=10.0,
             loss=dict(type='ShapePriorLoss')),
        dict(type='PosePriorHandler', name='pose_prior', weight=50.0,
             loss=dict(type='PoseL2Prior')),
        dict(type='ScaleTranslationPriorHandler', name='scale_prior', weight=200.0),
    ],
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=4,
             optimizer=dict(type='LBFGS', max_iter=25), ftol=1e-7,
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0, scale_prior=0.0)),
        dict(name='pose_shape', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=6, optimizer=dict(type='LBFGS', max_iter=25), ftol=1e-7,
             loss_weights=dict(scale_prior=0.0)),
        dict(name='silhouette',
             fit=['global_orient', 'transl', 'body_pose', 'betas', 'log_scale'],
             n_iter=60, optimizer=dict(type='Adam', lr=0.01), ftol=0.0,
             loss_weights=dict(sil=400.0)),
    ],
)
