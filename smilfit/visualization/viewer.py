"""The interactive 3D viewer of a :class:`~smilfit.visualization.scene.Scene` (viser).

:class:`SceneViewer` puts a scene on a ``viser.ViserServer``: a mesh per animal, fitted and
observed keypoints coloured by their error with a line between each pair, the cameras as
frusta showing their view's image, scan points (registrations); a timeline (frame slider,
play, speed); a checkbox per layer; "view through" a dataset camera. The browser page is
viser's own client, served by the server itself: nothing is fetched from the internet.

:func:`export_html` records the same scene, frame after frame, into one self-contained
HTML file (viser's embedded player with its timeline; no server, works offline).

viser is an optional dependency (``pip install smilfit[viewer]``); importing this module
does not need it, building a viewer does.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np

from .scene import Scene, camera_frustum_pose, camera_up_direction, error_point_colours
from ..utils.atomic import write_text

__all__ = ['SceneViewer', 'LAYERS', 'export_html', 'require_viser', 'free_port',
           'MESH_COLOUR', 'OBSERVED_COLOUR']

PathLike = Union[str, os.PathLike]
#: Layers that can be switched on and off, in the order of the checkboxes.
LAYERS = ('mesh', 'fitted keypoints', 'observed keypoints', 'error lines', 'cameras',
          'images', 'scan points')
#: RGB of the meshes (per animal: the first, then rotated hues).
MESH_COLOUR = (70, 140, 230)
#: RGB of observed keypoints when the scene has no errors.
OBSERVED_COLOUR = (30, 30, 30)
_ANIMAL_COLOURS = ((70, 140, 230), (230, 150, 60), (120, 200, 120), (200, 100, 200))


def require_viser():
    """Import viser, or raise an ImportError that says how to install it."""
    try:
        import viser
    except ImportError as err:
        raise ImportError("the 3D viewer needs viser: pip install 'smilfit[viewer]' "
                          '(or pip install viser==1.1.1)') from err
    return viser


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


#: Share of the view's height the animal's bounding sphere fills in a framed view: room
#: around it for the first frames of its motion.
FRAME_FILL = 0.6


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x).all(-1)


class SceneViewer:
    """Draw a scene on a viser server and keep it in step with a timeline.

    Looking through a dataset camera hides that camera's frustum (its image would cover
    the view); the other cameras show their images where they are.

    Args:
        scene: what to draw (:func:`~smilfit.visualization.scene.load_scene`).
        server: a ``viser.ViserServer``.
        error_scale: error at the red end of the colour scale (default: the 95th
            percentile of the scene's errors, at least 1e-6).
        layers: names from :data:`LAYERS` shown at the start (default: all).
        view_camera: index of the camera to look through at the start (None: a free view
            from above the scene).
        frame_animal: frame the first frame's animal (its bounding sphere fills
            :data:`FRAME_FILL` of the view's height): from a dataset camera's position,
            aimed at the animal with the field of view that frames it; in the free view,
            moved in or out to that distance. False: a camera's own field of view, exactly
            as it saw the scene.
        gui: add the timeline, layer and camera controls (False: scene nodes only, e.g.
            for :func:`export_html`).
        fps: playback speed (frames per second).
    """

    def __init__(self, scene: Scene, server, *, error_scale: Optional[float] = None,
                 layers: Optional[Iterable[str]] = None, view_camera: Optional[int] = 0,
                 frame_animal: bool = True, gui: bool = True, fps: float = 10.0) -> None:
        self.scene = scene
        self.server = server
        self.frame = 0
        shown = set(LAYERS if layers is None else layers)
        unknown = shown - set(LAYERS)
        if unknown:
            raise ValueError(f'unknown layers {sorted(unknown)}; layers: {", ".join(LAYERS)}')
        self.layers: Dict[str, bool] = {name: name in shown for name in LAYERS}
        self.error_scale = float(error_scale) if error_scale else self._default_error_scale()
        self.size = scene.scale()
        self.fps = float(fps)
        self.view_camera = view_camera
        self.frame_animal = bool(frame_animal)
        self._looking_through = view_camera
        self._lock = threading.RLock()   # GUI callbacks may call set_frame back
        self._playing = threading.Event()
        self._stop = threading.Event()
        self._nodes: Dict[str, object] = {}
        self._cameras: List[object] = []
        self._gui: Dict[str, object] = {}
        self._build_nodes()
        if gui:
            self._build_gui()
        self.set_initial_view(view_camera)
        self.set_frame(0)
        self._player = threading.Thread(target=self._play_loop, daemon=True)
        self._player.start()

    # -- scene -----------------------------------------------------------------------

    def _default_error_scale(self) -> float:
        parts = [e for e in (self.scene.errors,) if e is not None]
        if self.scene.point_errors:
            parts += list(self.scene.point_errors)
        values = np.concatenate([np.ravel(p) for p in parts]) if parts else np.zeros(0)
        values = values[np.isfinite(values)]
        return float(max(np.percentile(values, 95), 1e-6)) if len(values) else 1.0

    def _build_nodes(self) -> None:
        sc, api = self.scene, self.server.scene
        api.set_up_direction(tuple(camera_up_direction(sc.cameras)))
        marker = 0.02 * self.size
        if sc.vertices is not None and sc.faces is not None:
            for a in range(sc.num_animals):
                colour = _ANIMAL_COLOURS[a % len(_ANIMAL_COLOURS)]
                self._nodes[f'mesh{a}'] = api.add_mesh_simple(
                    f'/animals/animal_{a}/mesh', sc.vertices[0, a].astype(np.float32),
                    sc.faces.astype(np.uint32), color=colour, side='double')
        # float32 points: viser's float16 default rounds world coordinates (0.5 mm at 1 m).
        dummy = np.zeros((1, 3), np.float32)
        if sc.fitted is not None:
            self._nodes['fitted'] = api.add_point_cloud(
                '/keypoints/fitted', dummy, np.zeros((1, 3), np.uint8), point_size=marker,
                point_shape='circle', precision='float32')
        if sc.observed is not None:
            self._nodes['observed'] = api.add_point_cloud(
                '/keypoints/observed', dummy, np.zeros((1, 3), np.uint8),
                point_size=marker * 1.3, point_shape='diamond', precision='float32')
            if sc.fitted is not None:
                self._nodes['lines'] = api.add_line_segments(
                    '/keypoints/error_lines', np.zeros((1, 2, 3), np.float32),
                    np.zeros((1, 2, 3), np.uint8), thickness=marker * 0.25)
        if sc.points is not None:
            self._nodes['points'] = api.add_point_cloud(
                '/scan/points', dummy, np.zeros((1, 3), np.uint8), point_size=marker * 0.5,
                point_shape='circle', precision='float32')
        if sc.cameras is not None:
            cams = sc.cameras
            for c, name in enumerate(cams.names):
                w, h = cams.image_size[0, c]
                fy = cams.K[0, c, 1, 1]
                fov = 2.0 * np.arctan2(h / 2.0, fy) if np.isfinite(fy) and fy > 0 else 1.0
                self._cameras.append(api.add_camera_frustum(
                    f'/cameras/{name}', fov=float(fov), aspect=float(w / h) if h else 1.0,
                    scale=0.15 * self.size, thickness=0.004 * self.size,
                    color=(60, 60, 60)))

    def set_frame(self, frame: int) -> None:
        """Show timeline position ``frame`` (0 .. T-1) on every node."""
        sc = self.scene
        frame = int(np.clip(frame, 0, sc.num_frames - 1))
        with self._lock, self.server.atomic():
            self.frame = frame
            on = self.layers
            if sc.vertices is not None and sc.faces is not None:
                for a in range(sc.num_animals):
                    node = self._nodes[f'mesh{a}']
                    verts = sc.vertices[frame, a]
                    present = bool(np.isfinite(verts).all())
                    if present:
                        node.vertices = verts.astype(np.float32)
                    node.visible = present and on['mesh']
            errors = None if sc.errors is None else sc.errors[frame].reshape(-1)
            if sc.fitted is not None:
                pts = sc.fitted[frame].reshape(-1, 3)
                self._set_points(self._nodes['fitted'], pts,
                                 error_point_colours(errors, self.error_scale, len(pts)),
                                 on['fitted keypoints'])
            if sc.observed is not None:
                pts = sc.observed[frame].reshape(-1, 3)
                colours = (error_point_colours(errors, self.error_scale, len(pts))
                           if errors is not None else
                           error_point_colours(None, 1.0, len(pts), OBSERVED_COLOUR))
                self._set_points(self._nodes['observed'], pts, colours,
                                 on['observed keypoints'])
                if 'lines' in self._nodes:
                    a = sc.fitted[frame].reshape(-1, 3)
                    b = pts
                    ok = _finite_rows(a) & _finite_rows(b)
                    seg = np.stack([a[ok], b[ok]], axis=1).astype(np.float32)
                    col = np.repeat(colours[ok][:, None], 2, axis=1)
                    node = self._nodes['lines']
                    if len(seg):
                        node.points, node.colors = seg, col
                    node.visible = bool(len(seg)) and on['error lines']
            if sc.points is not None:
                pts = sc.points[frame]
                self._set_points(self._nodes['points'], pts,
                                 error_point_colours(sc.point_errors[frame], self.error_scale,
                                                     len(pts)), on['scan points'])
            if sc.cameras is not None:
                self._update_cameras(frame)
            label = self._gui.get('label')
            if label is not None:
                label.content = f'**{sc.frame_labels[frame]}** ({frame + 1} / {sc.num_frames})'
            slider = self._gui.get('frame')
            if slider is not None and slider.value != frame:
                slider.value = frame

    @staticmethod
    def _set_points(node, pts: np.ndarray, colours: np.ndarray, show: bool) -> None:
        ok = _finite_rows(pts)
        if ok.any():
            node.points = pts[ok].astype(np.float32)
            node.colors = colours[ok].astype(np.uint8)
        node.visible = bool(ok.any()) and show

    def _update_cameras(self, frame: int) -> None:
        from viser.transforms import SO3
        cams = self.scene.cameras
        images = self.scene.images(frame) if self.layers['images'] and \
            self.layers['cameras'] else None
        for c, node in enumerate(self._cameras):
            R, t = cams.R[frame, c], cams.t[frame, c]
            ok = bool(cams.valid[frame, c]) and np.isfinite(R).all() and np.isfinite(t).all()
            if ok:
                rot, centre = camera_frustum_pose(R, t)
                node.wxyz = SO3.from_matrix(rot).wxyz
                node.position = centre
                image = None if images is None or c >= len(images) else images[c]
                node.image = image
            # The camera looked through is hidden: its image plane would cover the view.
            node.visible = ok and self.layers['cameras'] and c != self._looking_through

    def set_layer(self, name: str, shown: bool) -> None:
        """Show or hide a layer (a name from :data:`LAYERS`)."""
        if name not in self.layers:
            raise ValueError(f'unknown layer {name!r}; layers: {", ".join(LAYERS)}')
        self.layers[name] = bool(shown)
        self.set_frame(self.frame)

    # -- views -----------------------------------------------------------------------

    def camera_view(self, camera: int, frame: Optional[int] = None) -> Dict[str, np.ndarray]:
        """``position``, ``look_at``, ``up`` and vertical ``fov`` (radians) of looking
        through dataset camera ``camera`` at ``frame`` (default: the current one)."""
        cams = self.scene.cameras
        if cams is None or not 0 <= camera < len(cams.names):
            raise ValueError(f'no camera {camera}; the scene has '
                             f'{0 if cams is None else len(cams.names)}')
        f = self.frame if frame is None else frame
        rot, centre = camera_frustum_pose(cams.R[f, camera], cams.t[f, camera])
        lo, hi = self.scene.bounds()
        depth = max(float((rot[:, 2] @ ((lo + hi) / 2 - centre))), 1e-3 * self.size)
        h = float(cams.image_size[f, camera, 1])
        fov = 2.0 * np.arctan2(h / 2.0, float(cams.K[f, camera, 1, 1]))
        return dict(position=centre, look_at=centre + rot[:, 2] * depth, up=-rot[:, 1],
                    fov=np.float64(fov))

    def framed_view(self, view: Dict[str, np.ndarray], move: bool,
                    frame: int = 0) -> Dict[str, np.ndarray]:
        """``view`` aimed at what is drawn at timeline position ``frame`` so that its
        bounding sphere fills :data:`FRAME_FILL` of the view's height: by moving the eye
        along its line of sight (``move``) or, from where it is, by the field of view
        (1 to 120 degrees). Unchanged where nothing is drawn at ``frame`` or the eye is
        inside the sphere."""
        pts = self.scene.drawn_points(frame)
        if not len(pts):
            return view
        lo, hi = pts.min(0).astype(np.float64), pts.max(0).astype(np.float64)
        centre = (lo + hi) / 2
        radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-6 * self.size)
        position = np.asarray(view['position'], np.float64)
        if move:
            fov = float(view['fov'])
            sight = position - np.asarray(view['look_at'], np.float64)
            sight /= max(np.linalg.norm(sight), 1e-12)
            distance = radius / np.sin(np.arctan(FRAME_FILL * np.tan(fov / 2)))
            return dict(view, position=centre + sight * distance, look_at=centre)
        distance = float(np.linalg.norm(centre - position))
        if distance <= radius:
            return view
        wanted = 2 * np.arctan(np.tan(np.arcsin(radius / distance)) / FRAME_FILL)
        return dict(view, look_at=centre,
                    fov=np.float64(np.clip(wanted, np.deg2rad(1.0), np.deg2rad(120.0))))

    def set_initial_view(self, camera: Optional[int]) -> None:
        """The view new clients (and recordings) start with: through ``camera``, or (None,
        or no cameras) from above and aside of the scene; framed on the first frame's
        animal where :attr:`frame_animal` is set."""
        init = self.server.initial_camera
        lo, hi = self.scene.bounds()
        centre = (lo + hi) / 2
        if camera is not None and self.scene.cameras is not None:
            view = self.camera_view(camera, 0)
        else:
            up = camera_up_direction(self.scene.cameras)
            side = np.cross(up, [1.0, 0.0, 0.0])
            if np.linalg.norm(side) < 1e-3:
                side = np.cross(up, [0.0, 1.0, 0.0])
            side /= np.linalg.norm(side)
            reach, direction = self.size, up * 0.8 + side
            if self.scene.cameras is not None:
                # Behind the cameras (their images face this way) and far enough out to
                # see them all.
                centres = -np.einsum('tcji,tcj->tci', self.scene.cameras.R,
                                     self.scene.cameras.t)
                finite = centres[np.isfinite(centres).all(-1)]
                if len(finite):
                    reach = max(reach, 2.2 * float(np.linalg.norm(finite - centre,
                                                                  axis=-1).max()))
                    mean = finite.mean(0) - centre
                    if np.linalg.norm(mean) > 1e-6 * self.size:
                        direction = mean / np.linalg.norm(mean) + 0.5 * up
            direction = direction / np.linalg.norm(direction)
            view = dict(position=centre + direction * reach, look_at=centre, up=up,
                        fov=np.float64(np.deg2rad(50.0)))
        if self.frame_animal:
            view = self.framed_view(view, move=camera is None or self.scene.cameras is None)
        far = self.size * 20.0
        if self.scene.cameras is not None:
            centres = -np.einsum('tcji,tcj->tci', self.scene.cameras.R, self.scene.cameras.t)
            finite = centres[np.isfinite(centres).all(-1)]
            if len(finite):
                far = max(far, 4.0 * float(np.linalg.norm(finite - centre, axis=-1).max()))
        init.near, init.far = 0.01 * self.size, far
        init.fov = float(view['fov'])
        init.up = tuple(view['up'])
        init.position = tuple(view['position'])
        init.look_at = tuple(view['look_at'])

    def look_through(self, camera: Optional[int]) -> None:
        """Move every connected client's view to dataset camera ``camera`` (None: the free
        starting view), and make it the view of new clients."""
        self.set_initial_view(camera)
        self._looking_through = camera
        self.set_frame(self.frame)
        init = self.server.initial_camera
        for client in self.server.get_clients().values():
            with client.atomic():
                client.camera.up_direction = init.up
                client.camera.fov = init.fov
                client.camera.position = init.position
                client.camera.look_at = init.look_at

    # -- GUI -------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui, sc = self.server.gui, self.scene
        gui.set_panel_label(f'smilfit · {sc.title}')
        with gui.add_folder('Timeline'):
            self._gui['label'] = gui.add_markdown('')
            frame = gui.add_slider('frame', 0, max(sc.num_frames - 1, 1), 1, 0,
                                   disabled=sc.num_frames < 2)
            play = gui.add_checkbox('play', False)
            fps = gui.add_slider('fps', 1.0, 60.0, 1.0, self.fps)
            step_back = gui.add_button('◀ previous')
            step_next = gui.add_button('next ▶')
        self._gui['frame'] = frame

        @frame.on_update
        def _(_event) -> None:
            if frame.value != self.frame:
                self.set_frame(int(frame.value))

        @play.on_update
        def _(_event) -> None:
            (self._playing.set if play.value else self._playing.clear)()

        @fps.on_update
        def _(_event) -> None:
            self.fps = float(fps.value)

        step_back.on_click(lambda _e: self.set_frame(self.frame - 1))
        step_next.on_click(lambda _e: self.set_frame(self.frame + 1))

        with gui.add_folder('Layers'):
            for name in LAYERS:
                if not self._has_layer(name):
                    continue
                box = gui.add_checkbox(name, self.layers[name])
                box.on_update(lambda _e, name=name, box=box: self.set_layer(name, box.value))
        if sc.cameras is not None:
            with gui.add_folder('View'):
                options = ['free'] + list(sc.cameras.names)
                start = 'free' if self.view_camera is None else sc.cameras.names[
                    self.view_camera]
                through = gui.add_dropdown('look through', options, initial_value=start)

                @through.on_update
                def _(_event) -> None:
                    v = through.value
                    self.look_through(None if v == 'free' else options.index(v) - 1)
        if sc.label_places:
            with gui.add_folder('Labels on the body', expand_by_default=False):
                self._gui['label_places'] = gui.add_markdown(sc.label_places)
        if sc.errors is not None or sc.point_errors is not None:
            unit = sc.error_unit or sc.units
            gui.add_markdown(
                f'Keypoint colour: error, green 0 → yellow → red ≥ '
                f'{self.error_scale:.3g} {unit}'.strip() +
                ('; ◆ observed, ● fitted' if sc.observed is not None else ''))

    def _has_layer(self, name: str) -> bool:
        sc = self.scene
        return dict(mesh=sc.vertices is not None and sc.faces is not None,
                    **{'fitted keypoints': sc.fitted is not None,
                       'observed keypoints': sc.observed is not None,
                       'error lines': sc.observed is not None and sc.fitted is not None,
                       'cameras': sc.cameras is not None,
                       'images': sc.image_reader is not None,
                       'scan points': sc.points is not None})[name]

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            if not self._playing.wait(timeout=0.2):
                continue
            start = time.monotonic()
            self.set_frame((self.frame + 1) % self.scene.num_frames)
            self._stop.wait(max(1.0 / max(self.fps, 1e-3) - (time.monotonic() - start), 0.0))

    def play(self, playing: bool = True) -> None:
        """Start or stop playback (what the ``play`` checkbox does)."""
        (self._playing.set if playing else self._playing.clear)()

    def close(self) -> None:
        """Stop playback (the server is the caller's to stop)."""
        self._stop.set()
        self._playing.clear()


def export_html(scene: Scene, path: PathLike, *, fps: float = 10.0,
                error_scale: Optional[float] = None, layers: Optional[Iterable[str]] = None,
                view_camera: Optional[int] = 0, frame_animal: bool = True) -> Path:
    """Write the scene as one self-contained HTML page: viser's client with the recording
    embedded (every frame, with a play/scrub bar), no server, nothing fetched online.

    The page is written atomically. Images on the camera frusta are included for every
    frame when the ``images`` layer is on (they dominate the file size). The page opens
    on the view of :class:`SceneViewer` (``view_camera``, ``frame_animal``).
    """
    import contextlib
    import io
    viser = require_viser()
    host = '127.0.0.1'
    # The recording needs a server object (it is never connected to); viser prints its
    # address banner whatever `verbose` says, which would only mislead here.
    with contextlib.redirect_stdout(io.StringIO()):
        server = viser.ViserServer(host=host, port=free_port(host), verbose=False)
    try:
        viewer = SceneViewer(scene, server, error_scale=error_scale, layers=layers,
                             view_camera=view_camera, frame_animal=frame_animal,
                             gui=False, fps=fps)
        viewer.close()
        recording = server.get_scene_serializer()
        for frame in range(scene.num_frames):
            viewer.set_frame(frame)
            recording.insert_sleep(1.0 / fps)
        html = recording.as_html()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            server.stop()
    path = Path(path)
    write_text(path, html)
    return path
