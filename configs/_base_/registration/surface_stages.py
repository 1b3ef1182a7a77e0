# Stages of a scan registration, coarse to fine (the handlers, whose weights depend on
# the model's units, come from the model's config):
#   rigid      global pose only, from the PCA initialisation (registration.init='pca');
#   shape      overall shape (betas) with the global pose, before the pose can bend
#              limbs to make up for a wrong shape;
#   pose_shape body pose and shape against the scan, with the priors;
#   detail     free-form per-vertex offsets (the body model adds them to the shaped rest
#              mesh before skinning), held smooth by the offset regularisers, which are
#              off (weight 0) until this stage.
# The model's config gives the handlers: 'scan' (scan points to the model), 'coverage'
# (model to scan points), 'shape_prior', 'pose_prior', 'offset_smooth', 'offset_edges'.
# Every stage fits each scan independently (batched per-sample L-BFGS), so a batch
# gives exactly what a per-scan loop would.
registrant = dict(
    type='SMILRegistrant',
    init='zeros',              # the global pose comes from the scans' PCA frames instead
    return_vertices=True,
    stages=[
        dict(name='rigid', fit=['global_orient', 'transl'], n_iter=1,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(shape_prior=0.0, pose_prior=0.0)),
        dict(name='shape', fit=['global_orient', 'transl', 'betas'], n_iter=1,
             optimizer=dict(type='LBFGS', max_iter=30, line_search_fn='strong_wolfe'),
             loss_weights=dict(pose_prior=0.0)),
        dict(name='pose_shape', fit=['global_orient', 'transl', 'body_pose', 'betas'],
             n_iter=1,
             optimizer=dict(type='LBFGS', max_iter=80, line_search_fn='strong_wolfe'),
             loss_weights=dict(coverage=0.1)),
        dict(name='detail', fit=['vertex_offsets'], n_iter=1,
             optimizer=dict(type='LBFGS', max_iter=20, line_search_fn='strong_wolfe'),
             loss_weights=dict(coverage=0.0, offset_smooth=1.0, offset_edges=1.0)),
    ],
    hooks=[dict(type='ProgressBarHook')],
)

# How scans are prepared and scored (see smilfit.apis.registration.register_scans).
registration = dict(
    # x' = s R (x - c): centre on the mean point; keep the scans' scale (they are in
    # model units) and orientation (the PCA initialisation handles it). Use
    # scale='rms', target_size='template' for scans in other units, align=True or
    # rotation=[[...]] (manual override) to pre-rotate them.
    normalize=dict(center='mean', scale='none', align=False),
    init='pca',                # template PCA frame -> scan PCA frame, best of both long-axis
                           # directions x init_rolls rolls, by chamfer distance
    init_points=1024,
    init_rolls=8,              # rolls about the long axis tried (width ~ height: unstable axes)
    error_percentile=95.0,     # errors.csv: mean / 95th-percentile / max surface distance
    save_meshes=True,
    mesh_format='.ply',
)
