#!/usr/bin/env bash
# Every CUDA check of the project: the gpu tests, then the CUDA benchmarks
# beside the CPU in the same run. Writes one log per step to OUT_DIR and prints them.
#   bash benchmarks/cuda.sh OUT_DIR            # every step but suite (about 15 minutes on an H100)
#   bash benchmarks/cuda.sh OUT_DIR suite fit  # only these steps
# Steps: suite (the whole test suite, gpu tests included; pytest-xdist when installed),
# tests (the gpu tests alone), train (eager; head and losses compiled; everything
# compiled), fit, solvers (the sparse and dense factorisations by batch size), render,
# body, recipe (not run by default: the GPU-sized regression recipe on the shared
# session, configs/regression/mouse_session_resnet50_gpu.py, RECIPE_ITERS iterations
# (4000) or as many as RECIPE_BUDGET seconds (500, the whole step: a lease is minutes)
# allow, its held-out table beside the fit's and the baselines'; work files in
# RECIPE_DIR, /tmp/real_session, so that checkpoints stay out of OUT_DIR), table (not
# run by default either: the same recipe's whole held-out table, (a) to (e'): TABLE_RENDERS
# (500) renders in the rig, then (b), (d) and (c), each with the iterations the budget
# leaves; TABLE_SPLIT=1 holds out other time blocks), starts (not run by default: the
# CPU-sized network (b) trained on the GPU, then every frame of the session fitted from
# the default start and from its predictions, on the CPU with one thread and on the GPU,
# seven alternating runs each: the network start's shares of the default start's
# iterations and seconds on each, whole and to the default start's held-out error).
# On a lent GPU machine, which gets the checkout and nothing beside it: make .device/ here
# first (bash benchmarks/device_bundle.sh) and carry it; its wheels are installed and its
# copy of ../shared is read (SMILFIT_SHARED). The tables the recipe, table and starts steps
# write for the docs (docs/tables) are copied to OUT_DIR/tables: put them in docs/tables.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v python >/dev/null 2>&1; then   # (an image with python3 only)
  mkdir -p /tmp/smilfit_bin && ln -sf "$(command -v python3)" /tmp/smilfit_bin/python
  export PATH=/tmp/smilfit_bin:$PATH
fi
out=${1:?usage: bash benchmarks/cuda.sh OUT_DIR [STEP...]}
shift
steps=${*:-tests train fit solvers render body}
xdist=()
python -c "import xdist" 2>/dev/null && xdist=(-n 12 --dist loadfile)
mkdir -p "$out"
stamp=$(mktemp)   # the docs' tables written after this are copied to $out/tables at the end
trap 'mkdir -p "$out/tables"; find docs/tables -name "*.md" -newer "$stamp" \
        -exec cp {} "$out/tables/" \; 2>/dev/null; rm -f "$stamp"' EXIT
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ -d .device/whl ] && ! python -c 'import mmengine' 2>/dev/null; then  # (a GPU image)
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/smilfit_site .device/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/smilfit_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .device/shared ]; then export SMILFIT_SHARED=$PWD/.device/shared; fi
run() {  # run NAME SECONDS COMMAND...: with a time limit, logged to $out/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | grep -v '^synthetic:' | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
  | tee "$out/device.log"
for step in $steps; do
  case $step in
    suite) run suite 420 python -m pytest -q -p no:cacheprovider --durations=15 "${xdist[@]}" ;;
    tests) run gpu_tests 300 python -m pytest -q -p no:cacheprovider --durations=10 -m gpu \
             --continue-on-collection-errors "${xdist[@]}" tests ;;
    train) args=(--device cuda --amp bf16 --backbone resnet50 --size 256 --batch 64 --workers 8
                 --iters 20)
           run train_throughput 240 python benchmarks/train_throughput.py "${args[@]}"
           run train_throughput_compile_loss 360 python benchmarks/train_throughput.py \
             "${args[@]}" --compile-loss
           run train_throughput_compiled 420 python benchmarks/train_throughput.py \
             "${args[@]}" --compile --compile-loss ;;
    fit) for model in stick mouse; do
           run "fitting_${model}_cpu" 120 python benchmarks/fitting.py --model "$model" \
             --threads 1 --frames 1000 --loop-frames 0 --repeats 1
           run "fitting_${model}_cuda" 120 python benchmarks/fitting.py --model "$model" \
             --device cuda --frames 1000 --loop-frames 4 --repeats 3
           run "fitting_${model}_cuda_100k" 240 python benchmarks/fitting.py \
             --model "$model" --device cuda --frames 100000 --chunk-size 8192 \
             --loop-frames 0 --repeats 1
         done ;;
    render) run render_cpu 240 python benchmarks/render.py --models stick mouse \
              --sizes 256 512 --threads 1
            run render_cuda 120 python benchmarks/render.py --models stick mouse \
              --sizes 256 512 --device cuda ;;
    solvers) run linear_solvers_cuda 120 python benchmarks/linear_solvers.py --device cuda \
               --models stick mouse --systems 1 4 16 64 256 1024 ;;
    body) run body_model 240 python benchmarks/body_model.py --device all --no-smplx ;;
    recipe) run real_session_recipe 570 python benchmarks/real_session_regression.py \
              --out-dir "${RECIPE_DIR:-/tmp/real_session}" --network-only --device cuda --amp \
              --config configs/regression/mouse_session_resnet50_gpu.py --crop-size 256 \
              --iters "${RECIPE_ITERS:-4000}" --time-budget "${RECIPE_BUDGET:-500}" \
              --threads 8 --tables docs/tables ;;
    table) run real_session_table 570 python benchmarks/real_session_regression.py \
             --out-dir "${RECIPE_DIR:-/tmp/real_session}" --table-only --device cuda --amp \
             --config configs/regression/mouse_session_resnet50_gpu.py --crop-size 256 \
             --iters "${RECIPE_ITERS:-4000}" --renders "${TABLE_RENDERS:-500}" \
             --time-budget "${RECIPE_BUDGET:-500}" --split-seed "${TABLE_SPLIT:-0}" \
             --threads 8 --tables docs/tables ;;
    starts) run real_session_starts 360 python benchmarks/real_session_regression.py \
              --out-dir "${RECIPE_DIR:-/tmp/real_session}" --starts-only --device cuda \
              --fit-devices cpu cuda --threads 8 --tables docs/tables ;;
    *) echo "unknown step $step (suite, tests, train, fit, solvers, render, body, recipe," \
            "table, starts)" >&2
       exit 2 ;;
  esac
done
