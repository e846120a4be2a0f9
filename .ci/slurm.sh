#!/usr/bin/env bash
# scripts/slurm/submit_eval.sh on a real single-node Slurm: installs Debian's Slurm
# and MUNGE, starts munged, slurmctld and slurmd for this host (configuration and
# state in a temporary folder, daemons stopped by PID at the end), evaluates a small
# synthetic set as 3 shards with the embedded demo model, kills a running task,
# resubmits, and checks the merged result against a single-process eval. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
repo="$PWD"

# The daemons run as root here (SlurmUser=root), and the packages may need installing.
((EUID == 0)) || { echo ".ci/slurm.sh needs root" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  # policy-rc.d: the packages' init scripts must not start daemons of their own.
  policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge > /dev/null
  ((created_policy == 0)) || rm -f "$policy"
fi

# Up to date with the source (a no-op after .ci/run's `cargo test --release`).
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/release/explainseg"
bin="$(cd "$(dirname "$bin")" && pwd)/explainseg"

tmp="$(mktemp -d)"
chmod 755 "$tmp"
pids=()
cleanup() {
  local rc=$?
  # Jobs first: slurmd waits for its running jobs before it exits.
  if ((${#pids[@]} > 1)); then
    scancel --full --quiet --partition=ci 2>/dev/null || true
    for _ in $(seq 20); do
      [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
      sleep 0.5
    done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if ((rc != 0)); then
    for f in "$tmp"/*.log "$tmp"/*.out "$tmp"/run/logs/*.log; do
      [[ -f $f ]] && { echo "--- $f"; tail -n 20 "$f"; }
    done
  fi
  rm -rf "$tmp"
  echo "slurm CI: $((SECONDS - start)) s"
}
trap cleanup EXIT

# MUNGE with its own key and socket, so a system munged (if any) is left alone.
mkdir -p "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$tmp/munge" && chmod 400 "$tmp/munge/munge.key"
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/munged.log" --seed-file="$tmp/munge/seed" > "$tmp/munged.out" 2>&1 &
pids+=($!)

# Free ports, so the CI can run beside another Slurm on this machine.
read -r ctld_port d_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
host="$(hostname -s)"
mkdir -p "$tmp/state" "$tmp/spool"
export SLURM_CONF="$tmp/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=explainseg-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
# No cgroups in containers: track tasks by process tree, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# munged must be up before the Slurm daemons authenticate with it.
for _ in $(seq 50); do [[ -S $tmp/munge/munge.sock ]] && break; sleep 0.1; done
[[ -S $tmp/munge/munge.sock ]] || { echo "munged did not start" >&2; exit 1; }
slurmctld -D -i -f "$SLURM_CONF" > "$tmp/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$host" -f "$SLURM_CONF" > "$tmp/slurmd.out" 2>&1 &
pids+=($!)
for i in $(seq 60); do
  state="$(sinfo -h -N -o %t 2>/dev/null || true)"
  [[ $state == idle ]] && break
  ((i < 60)) || { echo "node not idle after 60 s (state: ${state:-none})" >&2; exit 1; }
  sleep 1
done
echo "slurm up: node $host idle ($((SECONDS - start)) s)"

"$bin" --quiet synth --out "$tmp/data" --count 12 --size 64 --seed 3
eval_args=(--dataset folder --root "$tmp/data" --weights "$repo/assets/synth_vit.safetensors"
  --size 64 --variants c,xncut,tokencut)
"$bin" --quiet --threads 1 eval "${eval_args[@]}" --out "$tmp/single"
# The shards share one explanation folder (as a sweep on a cluster would); the
# single-process run above computed its own, so the comparison is independent.
eval_args+=(--explanations "$tmp/explanations")

# A task killed mid-way: this wrapper lets shard 2 score one image (--limit 1) and
# then hangs, so scancel always hits a running task that has partial work, however
# fast the machine (a race against a 1-second task would make the test flaky).
cat > "$tmp/hang-after-one.sh" <<HANG
#!/usr/bin/env bash
set -euo pipefail
if [[ \$SLURM_ARRAY_TASK_ID == 2 ]]; then
  "$bin" "\$@" --limit 1
  exec sleep 600
fi
exec "$bin" "\$@"
HANG
chmod +x "$tmp/hang-after-one.sh"
run="$tmp/run"
scripts/slurm/submit_eval.sh --shards 3 --out "$run" --wait --bin "$tmp/hang-after-one.sh" \
  -- "${eval_args[@]}" > "$tmp/first.out" 2>&1 &
first=$!
for i in $(seq 120); do
  [[ -f $run/shard-2/per_image.csv ]] && (($(wc -l < "$run/shard-2/per_image.csv") >= 4)) \
    && [[ $(squeue -h -o %T -j "$(squeue -h -o %F -n explainseg-eval | head -n1)_2" 2>/dev/null) == RUNNING ]] && break
  ((i < 120)) || { echo "shard 2 never got to its first image" >&2; exit 1; }
  sleep 0.5
done
array_id="$(squeue -h -o %F -n explainseg-eval | head -n1)"
scancel "${array_id}_2"
if wait "$first"; then
  echo "submit_eval.sh --wait exited 0 although a task was cancelled" >&2
  exit 1
fi
grep -q '"complete": false' "$run/shard-2/shard.json"
[[ ! -e $run/merged/per_image.csv ]] || { echo "merged although shard 2 was cancelled" >&2; exit 1; }
# A merge by hand names the unfinished shard.
if "$bin" eval-merge --out "$tmp/m" "$run"/shard-{1,2,3} 2> "$tmp/refused.txt"; then
  echo "eval-merge accepted an incomplete shard" >&2
  exit 1
fi
grep -q "shard-2 (shard 2/3) is incomplete" "$tmp/refused.txt"
kept="$(cat "$run/shard-2/per_image.csv")"

# Submitting while a submission into the same folder is still queued is refused.
held="$(sbatch --parsable --hold --chdir="$tmp" "$run/jobs/merge.sh")"
if scripts/slurm/submit_eval.sh --shards 3 --out "$run" --bin "$bin" -- "${eval_args[@]}" \
  2> "$tmp/busy.txt"; then
  echo "submit_eval.sh submitted into a folder whose jobs are queued" >&2
  exit 1
fi
grep -q "still queued or running" "$tmp/busy.txt"
scancel "${held%%;*}"
for _ in $(seq 20); do [[ -z "$(squeue -h -o %i)" ]] && break; sleep 0.5; done

echo "resubmitting after the killed task"
scripts/slurm/submit_eval.sh --shards 3 --out "$run" --wait --bin "$bin" -- "${eval_args[@]}"
[[ "$(head -c ${#kept} "$run/shard-2/per_image.csv")" == "$kept" ]] \
  || { echo "the resubmission did not keep shard 2's rows" >&2; exit 1; }

# Equal to the single-process run: every column but the wall-clock `seconds`, sorted,
# and the summary's numbers (its s/image and the grid note aside).
rows() { cut -d, -f1-5,7 "$1/per_image.csv" | sort; }
diff <(rows "$tmp/single") <(rows "$run/merged")
table() { grep '^|' "$1/summary.md" | cut -d'|' -f1-5; }
diff <(table "$tmp/single") <(table "$run/merged")
python3 - "$tmp/single/summary.json" "$run/merged/summary.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for s in (a, b):
    for m in s["methods"]:
        m.pop("seconds_per_image")
assert a == b, (a, b)
PY
echo "slurm: 3 shards, a cancelled task resubmitted, merged = single-process eval"
