#!/bin/bash
# GPU training of the learned refiner (issue 12 item 5). Run from the repository root:
#   bash .gpu/run.sh            (env: STEPS, WORKERS, DEVICE, TLIMIT, MAXMIN, OUT)
set -u
STEPS=${STEPS:-3600}; WORKERS=${WORKERS:-15}; DEVICE=${DEVICE:-cuda}
TLIMIT=${TLIMIT:-490}; MAXMIN=${MAXMIN:-7.6}; OUT=${OUT:-/tmp/gpu_out}
RUN=/tmp/gpu_run
mkdir -p "$OUT"; rm -rf "$RUN"
export PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=$PWD/.gpu/src:/tmp/site
  PY=python3
else
  export PYTHONPATH=$PWD/.gpu/src
  PY=${PY:-python3}
fi
{ date -u; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import sys, torch, kornia, cv2, rich, click, scipy, numpy, tomllib; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'); print('kornia', kornia.__version__, 'cv2', cv2.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# copy the trainer's files into $OUT every 20 s, so a killed command still returns the latest ones
( while sleep 20; do for f in best.pt last.pt metrics.csv; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/tmp_$f" && mv "$OUT/tmp_$f" "$OUT/$f"; done; done ) &
COPIER=$!
T0=$(date +%s)
timeout -k 10 "$TLIMIT" $PY -P -m stitch.cli.main train .gpu/src/configs/refiner_gpu.toml --device "$DEVICE" \
  -s data.root=.gpu/data -s run.out_dir=$RUN -s data.num_workers=$WORKERS \
  -s train.max_steps=$STEPS -s train.eval_every=500 -s train.log_every=100 -s train.ckpt_every=500 \
  -s train.swa_start=$((STEPS * 7 / 9)) -s train.swa_every=100 -s train.max_minutes=$MAXMIN ${EXTRA:-} 2>&1 | tee "$OUT/train.log"
echo "train exit ${PIPESTATUS[0]} after $(( $(date +%s) - T0 )) s" | tee -a "$OUT/train.log"
kill $COPIER 2>/dev/null
for f in refiner.pt best.pt last.pt metrics.csv metrics.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/$f"; done
rm -f "$OUT"/tmp_*
ls -la "$OUT"
