"""smilfit: 3D pose and shape of parametric animal body models from 2D/3D observations."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'smilfit', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


# Compatible ranges, so smilfit installs into an existing lab environment (SLEAP, mmpose...).
# The exact versions CI tests are in constraints.txt (pip install -e ".[dev]" -c
# constraints.txt). Upper bounds only where a break is known: smilfit.engine.compat patches
# mmengine 0.10 internals; sleap-io changes its data model between minor versions.
# On CPU-only machines torch 2.14.1 + torchvision 0.29.1 (CUDA builds that run on CPU) are
# the tested pair: torch 2.13.0+cpu has no torchvision that loads, and timm imports
# torchvision. opencv-python (not -headless) because mmengine requires it.
INSTALL_REQUIRES = [
    'torch>=2.6',
    'torchvision>=0.21',
    'timm>=1.0,<2',
    'mmengine>=0.10.7,<0.11',
    'h5py>=3.9',
    'sleap-io>=0.9.5,<0.10',
    'opencv-python>=4.8',
    'numpy>=1.26,<2.5',
    'scipy>=1.11',
    'trimesh>=4.0',
    'tqdm>=4.66',
    'matplotlib>=3.7',
    'imageio>=2.30',
    'imageio-ffmpeg>=0.5',
    # writes anipose calibration.toml (smilfit.cameras.camera_group); tomllib reads
    'tomli-w>=1.0',
]

EXTRAS_REQUIRE = {
    # smplx is only the speed yard-stick of benchmarks/body_model.py; roma only the
    # reference rotation conversions of tests/body_models/test_rotations.py.
    # nbclient/nbformat/ipykernel execute docs/tutorial.ipynb in the documentation build
    # (tests/docs/test_site.py);
    # viser is the viewer extra, in dev so CI tests the viewer; the docs extra too, so CI
    # builds the documentation site (tests/docs/). pytest-xdist runs the suite on two
    # cores (python -m pytest -n 2).
    'dev': ['pytest>=8', 'pytest-xdist>=3.5', 'smplx>=0.1.28', 'roma>=1.5', 'viser>=1.1.1,<1.2',
            'nbclient>=0.10', 'nbformat>=5.9', 'ipykernel>=6.29',
            'sphinx>=8', 'myst-parser>=4', 'myst-nb>=1.2', 'furo>=2024.8'],
    # The documentation site (sphinx-build docs docs/_build/html): Sphinx with MyST, as
    # mmengine and mmpose build theirs; myst-nb renders the tutorial notebook.
    'docs': ['sphinx>=8', 'myst-parser>=4', 'myst-nb>=1.2', 'furo>=2024.8'],
    # tools/view.py: the interactive 3D viewer and its HTML export (viser serves its own
    # client; nothing is fetched online).
    'viewer': ['viser>=1.1.1,<1.2'],
    # anipose's triangulation, the peer of benchmarks/holdout*.py: aniposelib itself is
    # installed with --no-deps (pip install --no-deps aniposelib==0.8.0) because it
    # requires opencv-contrib-python, which would replace opencv-python; these are the
    # rest of what it imports.
    'peers': ['numba', 'toml', 'jax'],
    # pytorch3d has no wheel for this Python on the registry; it builds from source
    # (about 17 minutes on 2 cores). smilfit never requires it.
    'pytorch3d': ['pytorch3d'],
}

setup(
    name='smilfit',
    version=read_version(),
    description='3D pose and shape of parametric animal body models (SMIL/SMAL/SMPL format): '
                'optimisation fitting and neural regression on mmengine.',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['smilfit', 'smilfit.*']),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        'console_scripts': [
            'smilfit-convert-model=smilfit.cli.convert_model:main',
            'smilfit-build-skeleton-model=smilfit.cli.build_skeleton_model:main',
            'smilfit-learn-pose-prior=smilfit.cli.learn_pose_prior:main',
            'smilfit-make-synthetic=smilfit.cli.make_synthetic:main',
            'smilfit-render-rig=smilfit.cli.render_rig:main',
            'smilfit-preprocess-sleap=smilfit.cli.preprocess_sleap:main',
            'smilfit-fit=smilfit.cli.fit:main',
            'smilfit-fit-in-the-loop=smilfit.cli.fit_in_the_loop:main',
            'smilfit-train=smilfit.cli.train:main',
            'smilfit-build-model=smilfit.cli.build_model:main',
            'smilfit-register=smilfit.cli.register:main',
            'smilfit-test=smilfit.cli.test:main',
            'smilfit-infer=smilfit.cli.infer:main',
            'smilfit-visualize=smilfit.cli.visualize:main',
            'smilfit-view=smilfit.cli.view:main',
            'smilfit-adapt=smilfit.cli.adapt:main',
            'smilfit-ingest-stanfordextra=smilfit.cli.ingest_stanfordextra:main',
        ],
    },
    license='MIT',
)
