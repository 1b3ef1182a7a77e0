#!/usr/bin/env bash
# Make .device/ (git-ignored) for a lent GPU machine, which gets the checkout and nothing
# beside it, has Python 3.12 with PyTorch, timm, h5py, OpenCV and SciPy, and cannot reach
# a package index:
#   .device/whl/     wheels of the packages smilfit's benchmarks import that its image
#                    lacks (pinned by constraints.txt where it pins them);
#   .device/shared/  the shared data the GPU steps read (the mouse and stick models, the
#                    4-camera mouse session), copied from ../shared.
# benchmarks/cuda.sh installs the wheels and reads the data from there when .device/
# exists. Then one device call runs a step, e.g. the GPU-sized regression recipe:
#   bash benchmarks/device_bundle.sh      # here, once (needs pip's index and ../shared)
#   run(command='bash benchmarks/cuda.sh $OUT recipe', carry=['.device'], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SMILFIT_SHARED:-../shared}
out=.device
# Imported on the benchmarks' and the tests' paths and missing from the GPU image (its
# package list: the device tool's KINDS.md; without trimesh, four test modules fail to
# import and a collecting pytest stops). imageio-ffmpeg (68 MB) is left out: sleap-io
# imports it only where it is installed, and smilfit decodes videos with OpenCV.
packages=(mmengine addict yapf platformdirs termcolor sleap-io shapely tomli-w trimesh)
python=3.12
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

pinned() {  # pinned NAME: NAME==VERSION from constraints.txt, else the version installed here
  local version
  version=$(sed -n "s/^$1==\(.*\)$/\1/p" constraints.txt)
  [ -n "$version" ] || version=$(python -c "import importlib.metadata as m; print(m.version('$1'))")
  echo "$1==$version"
}

for need in "$shared/models/SMILy_Mouse_static_joints.pkl" \
            "$shared/data/sleap_anipose_minimal_session/minimal_session"; do
  [ -e "$need" ] || { echo "device_bundle: $need is missing (set SMILFIT_SHARED)" >&2; exit 1; }
done
rm -rf "$out.partial"
mkdir -p "$out.partial/whl" "$out.partial/shared/models" "$out.partial/shared/data"
platform_args=()
for p in "${platforms[@]}"; do platform_args+=(--platform "$p"); done
for name in "${packages[@]}"; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version "$python" \
    --implementation cp "${platform_args[@]}" -d "$out.partial/whl" "$(pinned "$name")"
done
cp "$shared"/models/SMILy_*.pkl "$out.partial/shared/models/"
cp -r "$shared/data/sleap_anipose_minimal_session" "$out.partial/shared/data/"
chmod -R u+w "$out.partial"
rm -rf "$out"
mv "$out.partial" "$out"
du -sh "$out"
echo "device_bundle: $out is ready; carry it: run(command='bash benchmarks/cuda.sh \$OUT recipe', carry=['.device'])"
