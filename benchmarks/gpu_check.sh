#!/usr/bin/env bash
# The project's one GPU check, for a fresh CUDA machine, in under 8 minutes:
#   1 install      scripts/install.sh (torch built for the machine's driver), torch sees the device
#   2 record       scripted twin episodes into a fresh store
#   3 train        pi0-small on the device in bf16: s/step, peak memory, loss
#   4 full size    the full `pi0` from a random init: a chunk on the inference fast path (prefix,
#                  denoising eager and compiled, the attention kernel SDPA ran, against the 73 ms / 39 ms
#                  anchors) and a few training steps (s/step, peak memory): benchmarks/gpu_figures.py
#   5 bench        rig bench policy --config pi0 --device cuda (prefix and denoising latency)
#   6 serve+eval   rig serve --device cuda --compile on the trained checkpoint, rig eval against it
# then one PASS/FAIL line. Every figure is printed as it comes; each stage's full output is kept in
# the work folder. Without a GPU it runs end to end on the CPU: DEVICE=cpu, and the full-size stages
# use FULL_CONFIG=pi0-small there (the 3B model needs ~13 GB to infer and ~52 GB to train).
#
#   bash benchmarks/gpu_check.sh                 # DEVICE=cuda when nvidia-smi sees a GPU, else cpu
#   DEVICE=cpu bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DEVICE:-}" ]; then
    DEVICE=cpu
    nvidia-smi -L >/dev/null 2>&1 && DEVICE=cuda
fi
FULL_CONFIG=${FULL_CONFIG:-$([ "$DEVICE" = cuda ] && echo pi0 || echo pi0-small)}
EPISODES=${EPISODES:-2}
STEPS=${STEPS:-$([ "$DEVICE" = cuda ] && echo 200 || echo 20)}
EVAL_EPISODES=${EVAL_EPISODES:-$([ "$DEVICE" = cuda ] && echo 2 || echo 1)}
LIMIT_S=${LIMIT_S:-480}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$WORK"
STORE=$WORK/store
RUN=$WORK/run
RIG=(.venv/bin/python -m rig.cli)
results=()
started=$SECONDS

figure() { printf '  %-28s %s\n' "$1" "$2"; }

run_stage() {  # name, command...: runs it with its output in $WORK/<name>.log; records PASS/FAIL
    local name=$1 begun=$SECONDS
    shift
    echo "== $name: $*"
    if "$@" >"$WORK/$name.log" 2>&1; then
        results+=("PASS $name ($((SECONDS - begun)) s)")
        return 0
    fi
    results+=("FAIL $name ($((SECONDS - begun)) s; see $WORK/$name.log)")
    tail -n 5 "$WORK/$name.log" | sed 's/^/  | /'
    return 1
}

device_ready() {
    .venv/bin/python - "$DEVICE" <<'EOF'
import sys, torch
device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, device {device}", end="")
if device == "cuda":
    if not torch.cuda.is_available():
        raise SystemExit(": torch sees no CUDA device")
    props = torch.cuda.get_device_properties(0)
    print(f": {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}", end="")
print()
EOF
}

train_figures() {  # s/step (median of the logged windows after the first), peak memory, loss
    .venv/bin/python - "$RUN" <<'EOF'
import csv, statistics, sys
from pathlib import Path
rows = list(csv.DictReader((Path(sys.argv[1]) / "loss.csv").open()))
steady = [float(r["step_s"]) for r in rows[1:]] or [float(rows[0]["step_s"])]
print(f"{statistics.median(steady):.3f} s/step, {float(rows[-1]['samples_per_s']):.1f} samples/s, "
      f"loss {float(rows[0]['loss']):.3f} -> {float(rows[-1]['loss']):.3f}")
EOF
}

echo "GPU check: device $DEVICE, full-size stages on $FULL_CONFIG, work folder $WORK"

# 1 install
if run_stage install bash scripts/install.sh; then
    figure "install" "$(grep -E '^torch ' "$WORK/install.log" | tail -n 1 | cut -c10-)"
    if run_stage device device_ready; then
        figure "device" "$(cat "$WORK/device.log")"
    else
        echo "GPU check: FAIL (torch cannot use $DEVICE); $((SECONDS - started)) s"
        exit 1
    fi
fi

# 2 record
if run_stage record "${RIG[@]}" record --store "$STORE" --task "transfer the cube" --scene transfer_cube \
    --episodes "$EPISODES" --countdown 1 --successful-only; then
    figure "record" "$(grep -v '^\s*$' "$WORK/record.log" | tail -n 1)"
fi

# 3 train pi0-small in bf16
if run_stage train "${RIG[@]}" train --store "$STORE" --config pi0-small --steps "$STEPS" --batch-size 8 \
    --device "$DEVICE" --precision bf16 --log-every 10 --save-every 100000 --out "$RUN"; then
    figure "pi0-small training" "$(train_figures)"
    figure "pi0-small done" "$(grep -oE 'done: .*;' "$WORK/train.log" | tr -d ';')"
fi

# 4 the full size: chunk on the fast path, attention kernel, training steps
run_stage full-size .venv/bin/python benchmarks/gpu_figures.py --config "$FULL_CONFIG" --device "$DEVICE"
grep -E '^[a-z_]+ ' "$WORK/full-size.log" | grep -v '^USDT' | while read -r key value; do figure "$key" "$value"; done

# 5 rig bench policy
if run_stage bench "${RIG[@]}" bench policy --config "$FULL_CONFIG" --device "$DEVICE" --train-batch 0; then
    grep -E 'bench:|prefix|denoising|total|peak' "$WORK/bench.log" | sed 's/^ */  bench: /'
fi

# 6 serve the trained checkpoint on the device, evaluate against it
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serve_log=$WORK/serve.log
begun=$SECONDS
"${RIG[@]}" serve --checkpoint "$RUN" --device "$DEVICE" --compile --bind "tcp://127.0.0.1:$port" \
    >"$serve_log" 2>&1 &
server=$!
until grep -q '^ready' "$serve_log" 2>/dev/null || ! kill -0 "$server" 2>/dev/null || ((SECONDS - begun > 300)); do
    sleep 1
done
if grep -q '^ready' "$serve_log"; then
    figure "serve" "ready in $((SECONDS - begun)) s (checkpoint loaded, denoising step compiled)"
    if run_stage eval "${RIG[@]}" eval --policy "tcp://127.0.0.1:$port" --episodes "$EVAL_EPISODES" \
        --episode-time 6 --store "$STORE"; then
        figure "eval" "$(grep -E '^success ' "$WORK/eval.log" | cut -d';' -f1-2)"
    fi
else
    results+=("FAIL serve (not ready; see $serve_log)")
    tail -n 5 "$serve_log" | sed 's/^/  | /'
fi
kill -INT "$server" 2>/dev/null
wait "$server" 2>/dev/null

# verdict
took=$((SECONDS - started))
echo "== results"
printf '  %s\n' "${results[@]}"
failed=$(printf '%s\n' "${results[@]}" | grep -c '^FAIL')
if ((failed == 0 && took <= LIMIT_S)); then
    echo "GPU check: PASS on $DEVICE in $took s (limit $LIMIT_S s)"
else
    echo "GPU check: FAIL on $DEVICE: $failed stage(s) failed, $took s (limit $LIMIT_S s)"
    exit 1
fi
