"""smilfit.visualization: what people look at after a fit.

- :mod:`.zbuffer`: :func:`render_mesh`, a Lambert mesh renderer on smilfit's z-buffer
  rasteriser (:mod:`smilfit.renderers.zbuffer`, re-exported here: OpenCV cameras with
  distortion, near-plane clipping), fast enough for video on a CPU;
- :mod:`.overlay`: mesh overlays, observed vs fitted keypoints coloured by error,
  multi-view grids;
- :mod:`.video`: an atomic ``.mp4`` writer and :func:`render_fit_video` for a session;
- :mod:`.mesh_export`: per-frame ``.obj``/``.ply`` files (trimesh, vertex order kept);
- :mod:`.animation`: per-frame parameters as ``.npz`` + ``.json``, reloaded bit for bit;
- :mod:`.plots`: loss curves, per-joint errors, reprojection error per camera (matplotlib
  figures on their own Agg canvas; pyplot's global backend is never touched);
- :mod:`.fit_run`: a fit's work dir read back (:func:`load_fit_run`, the rebuilt registrant);
- :mod:`.fit_visuals`: :func:`export_fit_visuals`, all of it from a fit's work dir;
- :mod:`.scene`: :func:`load_scene`, a fit's (or inference's, registration's) work dir as
  3D arrays per frame; :mod:`.scene_export` writes it as GLB, :mod:`.viewer` shows it in
  the browser (viser, the optional ``viewer`` extra; imported only when used).

See ``docs/visualization.md``.
"""
from .animation import Animation, AnimationFormatError, load_animation, save_animation
from .fit_run import FitRun, load_fit_run
from .fit_visuals import export_fit_visuals
from .mesh_export import MESH_FORMATS, export_meshes
from .overlay import draw_keypoints, error_colours, grey_image, overlay_mesh, view_grid
from .scene import Scene, SceneCameras, SceneError, load_scene
from .scene_export import export_glb
from .plots import (normalise_history, plot_loss_curves, plot_per_joint_errors,
                    plot_reprojection_per_camera, save_figure)
from .video import VideoWriter, render_fit_frame, render_fit_video
from .zbuffer import (MeshRender, Rasterization, distortion_fold_radius2, rasterize,
                      render_mesh, vertex_normals)

__all__ = [
    'rasterize', 'render_mesh', 'Rasterization', 'MeshRender', 'vertex_normals',
    'distortion_fold_radius2',
    'overlay_mesh', 'draw_keypoints', 'error_colours', 'view_grid', 'grey_image',
    'VideoWriter', 'render_fit_video', 'render_fit_frame',
    'export_meshes', 'MESH_FORMATS',
    'save_animation', 'load_animation', 'Animation', 'AnimationFormatError',
    'plot_loss_curves', 'plot_per_joint_errors', 'plot_reprojection_per_camera',
    'save_figure', 'normalise_history',
    'export_fit_visuals', 'load_fit_run', 'FitRun',
    'load_scene', 'Scene', 'SceneCameras', 'SceneError', 'export_glb',
]
