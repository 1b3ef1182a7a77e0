"""smilfit: 3D pose and shape of parametric animal body models from 2D/3D observations."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'smilfit', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


# Pins checked on this project's machines (Python 3.11, CPU-only): torch 2.14.1 and
# torchvision 0.29.1 are CUDA builds that also run on CPU; torch 2.13.0+cpu has no
# torchvision that loads, and timm imports torchvision. opencv-python (not -headless)
# because mmengine requires it and both would provide `cv2`.
INSTALL_REQUIRES = [
    'torch==2.14.1',
    'torchvision==0.29.1',
    'timm==1.0.31',
    'mmengine==0.10.7',
    'h5py==3.16.0',
    'sleap-io==0.9.5',
    'opencv-python==5.0.0.93',
    'numpy>=1.26,<2.5',
    'scipy>=1.11',
    'roma==1.8.0',
    'trimesh==5.2.0',
    'tqdm>=4.66',
    'matplotlib>=3.7',
    'imageio>=2.30',
    'imageio-ffmpeg>=0.5',
]

EXTRAS_REQUIRE = {
    # smplx is only the speed yard-stick of benchmarks/body_model.py.
    'dev': ['pytest>=8', 'smplx==0.1.28'],
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
            'smilfit-preprocess-sleap=smilfit.cli.preprocess_sleap:main',
            'smilfit-fit=smilfit.cli.fit:main',
            'smilfit-train=smilfit.cli.train:main',
            'smilfit-build-model=smilfit.cli.build_model:main',
            'smilfit-register=smilfit.cli.register:main',
            'smilfit-test=smilfit.cli.test:main',
            'smilfit-infer=smilfit.cli.infer:main',
            'smilfit-visualize=smilfit.cli.visualize:main',
        ],
    },
    license='MIT',
)
