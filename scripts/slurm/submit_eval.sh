#!/usr/bin/env bash
# Runs `explainseg eval` over a data set as a Slurm job array of N shards and merges
# them in a job that starts only when every shard succeeded. See docs/scaling.md.
#
#   scripts/slurm/submit_eval.sh --shards N --out DIR [--wait] [--partition P]
#       [--cpus-per-task C] [--gpus-per-task G] [--time T] [--bin PATH]
#       [--sbatch-arg ARG]... -- <explainseg eval arguments>
#
# Layout of DIR: shard-K/ (eval --shard K/N --out DIR/shard-K), logs/shard-K.log (one
# per array task, appended to by resubmissions), logs/merge.log, jobs/ (the batch
# scripts), merged/ (eval-merge of every shard). Submitting the same command again
# resumes: each shard skips the images it has already scored.
set -euo pipefail

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "submit_eval.sh: $*" >&2; exit 2; }

shards="" out="" wait=0 bin="" sbatch_extra=()
while (($#)); do
  case "$1" in
    --shards) shards="${2:?--shards needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --wait) wait=1; shift ;;
    --partition) sbatch_extra+=("--partition=${2:?--partition needs a value}"); shift 2 ;;
    --cpus-per-task) sbatch_extra+=("--cpus-per-task=${2:?--cpus-per-task needs a value}"); shift 2 ;;
    --gpus-per-task) sbatch_extra+=("--gpus-per-task=${2:?--gpus-per-task needs a value}"); shift 2 ;;
    --time) sbatch_extra+=("--time=${2:?--time needs a value}"); shift 2 ;;
    --bin) bin="${2:?--bin needs a value}"; shift 2 ;;
    --sbatch-arg) sbatch_extra+=("${2:?--sbatch-arg needs a value}"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option \`$1\` (eval's own arguments go after \`--\`)" ;;
  esac
done
eval_args=("$@")
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "--shards N needs a whole number >= 1 (got \`$shards\`)"
[[ -n "$out" ]] || die "--out DIR is required"
((${#eval_args[@]})) || die "no eval arguments after \`--\` (e.g. -- --dataset folder --root DATA --weights MODEL)"
for a in "${eval_args[@]}"; do
  # These are set per task here; a second value would silently win or clash.
  case "$a" in
    --shard|--shard=*|--out|--out=*|--threads|--threads=*)
      die "\`${a%%=*}\` is set by this script (--shard per task, --out DIR/shard-K, --threads from SLURM_CPUS_PER_TASK); leave it out of the eval arguments" ;;
  esac
done
command -v sbatch >/dev/null || die "sbatch not found: run this on a Slurm submit host"

# The jobs may start on other nodes in another directory: every path they use is absolute.
here="$(cd "$(dirname "$0")/../.." && pwd)"
if [[ -z "$bin" ]]; then
  if command -v explainseg >/dev/null; then
    bin="$(command -v explainseg)"
  else
    bin="$here/target/release/explainseg"
  fi
fi
[[ -x "$bin" ]] || die "explainseg binary \`$bin\` not found or not executable (build it with \`cargo build --release\` or pass --bin PATH)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
mkdir -p "$out/logs" "$out/jobs"
out="$(cd "$out" && pwd)"

# Two tasks appending to one shard would corrupt it: refuse while jobs of DIR are queued or running.
queued="$(squeue -h -o '%o' 2>/dev/null || true)"
if grep -qF "$out/jobs/" <<< "$queued"; then
  die "jobs of an earlier submission into $out are still queued or running (squeue); scancel them or wait, then submit again"
fi

# Each task: its own shard folder, resumable; threads = the CPUs Slurm gave the task.
{
  echo '#!/usr/bin/env bash'
  echo 'set -euo pipefail'
  echo 'k="$SLURM_ARRAY_TASK_ID"'
  printf 'exec %q --threads "${SLURM_CPUS_PER_TASK:-1}" eval --shard "$k/%d" --out %q/shard-"$k"' "$bin" "$shards" "$out"
  printf ' %q' "${eval_args[@]}"
  echo
} > "$out/jobs/eval.sh"
{
  echo '#!/usr/bin/env bash'
  echo 'set -euo pipefail'
  printf 'exec %q eval-merge --out %q/merged' "$bin" "$out"
  for ((k = 1; k <= shards; k++)); do printf ' %q/shard-%d' "$out" "$k"; done
  echo
} > "$out/jobs/merge.sh"
chmod +x "$out/jobs/eval.sh" "$out/jobs/merge.sh"

# Relative paths in the eval arguments resolve against the directory of submission.
common=(--parsable --chdir="$PWD" "${sbatch_extra[@]}")
touch "$out/jobs/submitted"
array_id="$(sbatch "${common[@]}" --job-name=explainseg-eval --array="1-$shards" \
  --output="$out/logs/shard-%a.log" --open-mode=append "$out/jobs/eval.sh")"
array_id="${array_id%%;*}"
# afterok: the merge runs only if every task exited 0; otherwise Slurm cancels it
# instead of leaving it pending forever.
merge=(sbatch "${common[@]}" --job-name=explainseg-merge --dependency="afterok:$array_id"
  --kill-on-invalid-dep=yes --output="$out/logs/merge.log" --open-mode=append)
merge_id="$("${merge[@]}" "$out/jobs/merge.sh")"
merge_id="${merge_id%%;*}"
echo "submitted eval array $array_id (${shards} tasks) and merge $merge_id; results in $out/merged, logs in $out/logs" >&2
((wait == 1)) || exit 0
# Polls the controller rather than `sbatch --wait`, which exits 0 for a job cancelled
# before it started (the merge, when a task fails). Needs no accounting database.
active='JobState=(PENDING|CONFIGURING|RUNNING|COMPLETING|SUSPENDED|REQUEUED|RESIZING|SIGNALING|STAGE_OUT)'
# (Captured first: under pipefail, `grep -q` closing the pipe early would end the loop.)
jobs_now() { for j in "$array_id" "$merge_id"; do scontrol show job -o "$j" 2>/dev/null || true; done; }
while [[ "$(jobs_now)" =~ $active ]]; do sleep 2; done
merge_line="$(scontrol show job -o "$merge_id" 2>/dev/null || true)"
state="$(grep -Eo 'JobState=[A-Z_]+' <<< "$merge_line" | cut -d= -f2 || true)"
code="$(grep -Eo ' ExitCode=[0-9]+' <<< "$merge_line" | cut -d= -f2 || true)"
case "$state" in
  COMPLETED) status=0 ;;
  # Purged already (a short MinJobAge): a summary written since this submission is the merge's.
  "") if [[ "$out/merged/summary.json" -nt "$out/jobs/submitted" ]]; then status=0; else status=1; fi ;;
  *) status="${code:-1}"; ((status != 0)) || status=1 ;;
esac
if ((status == 0)); then
  echo "merged: $out/merged"
  cat "$out/merged/summary.md" 2>/dev/null || true
else
  echo "submit_eval.sh: the merge job ended ${state:-unknown} (exit $status): a shard failed or was cancelled, or eval-merge refused the shards" >&2
  for ((k = 1; k <= shards; k++)); do
    if ! grep -qs '"complete": true' "$out/shard-$k/shard.json"; then
      echo "  shard $k/$shards unfinished; log: $out/logs/shard-$k.log" >&2
    fi
  done
  echo "  merge log: $out/logs/merge.log; submit the same command again to resume" >&2
fi
exit "$status"
