#!/usr/bin/env bash
# Integration test of the Slurm path on one machine (not part of `cargo test`; needs root and apt):
# installs Debian's slurm-wlm and munge if missing, starts munged, slurmctld and slurmd on
# localhost (no systemd), runs a small demo sweep once in a single process, submits the same sweep
# as a job array written by `harness slurm`, waits, merges, and checks that the merged leaderboard
# equals the single-process one.
#
#   ci/slurm-test.sh                 # uses target/debug/harness (built if missing)
#   HARNESS=target/release/harness ci/slurm-test.sh
#
# SLURM_TEST_ARGS selects the sweep (default: three methods, 6 epochs, 256 examples: 9 array tasks).
# Epoch 1 of the demo recipe is its warm-up (lr 1e-6), so one epoch leaves linear, BitFit and LoRA at
# the same scores and a swapped or mixed-up record would compare equal. With 6 epochs on 256
# examples they train for real (measured single-process, debug build, 6 s: position 12.1 / 13.3 /
# 14.1, orientation 14.1 / 13.3 / 12.9, count 29.3 / 36.3 / 35.2), and the check below fails unless
# every task's methods score differently. (3 epochs on 64 examples still left ties.)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

harness=${HARNESS:-target/debug/harness}
if [[ ! -x "$harness" ]]; then cargo build -p harness; fi
harness=$(realpath "$harness")
read -r -a sweep <<< "${SLURM_TEST_ARGS:---filter method=linear --filter method=lora --filter method=bitfit --epochs 6 --limit 256}"

work=${SLURM_TEST_DIR:-$(mktemp -d /tmp/peftbench-slurm.XXXXXX)}
mkdir -p "$work"
export PEFTBENCH_CACHE=${PEFTBENCH_CACHE:-$work/cache} HF_HUB_OFFLINE=1
echo "work directory: $work"

# --- Slurm and munge -------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge
fi
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))

mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- munged --foreground > "$work/munged.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n | unmunge >/dev/null

conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=peftbench-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# Slurm 22.05 (Debian 12) initialises a cgroup plugin even with proctrack/linuxproc and task/none;
# "disabled" only exists from 23.x. Pick the cgroup version this machine mounts.
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then cgroup=cgroup/v2; else cgroup=cgroup/v1; fi
cat > "$conf_dir/cgroup.conf" <<CONF
CgroupPlugin=$cgroup
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
CONF

slurmctld -D -i > "$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D > "$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  [[ "$state" == idle* || "$state" == mix* ]] && break
  sleep 1
done
sinfo
[[ "$state" == idle* || "$state" == mix* ]] || { echo "the node did not come up: $state" >&2; tail -n 20 "$work"/slurm*.log "$work"/slurm*.out >&2; exit 2; }

# --- the same sweep twice ----------------------------------------------------------------------
echo "== single process"
"$harness" suite demo --results "$work/single" --reports "$work/single-reports" "${sweep[@]}"

echo "== Slurm job array"
"$harness" slurm demo --gpus 0 --cpus 1 --mem 1G --time 00:30:00 --results "$work/array" \
    --reports "$work/array-reports" --output "$work/demo.sbatch" "${sweep[@]}"
cat "$work/demo.sbatch"
start=$(date +%s)
sbatch --wait "$work/demo.sbatch"
echo "array finished in $(( $(date +%s) - start )) s"
sacct >/dev/null 2>&1 || true
ls "$work/array/slurm"

echo "== merge and compare"
"$harness" merge "$work/array" --into "$work/merged"
config=()
for ((i = 0; i < ${#sweep[@]}; i++)); do
  case "${sweep[$i]}" in
    --epochs|--limit|--override) config+=("${sweep[$i]}" "${sweep[$((i + 1))]}"); i=$((i + 1)) ;;
  esac
done
"$harness" report demo --results "$work/single" --format csv --no-write "${config[@]}" > "$work/single.csv"
"$harness" report demo --results "$work/merged" --format csv --no-write "${config[@]}" > "$work/merged.csv"
"$harness" report demo --results "$work/merged" --format md --no-write "${config[@]}"
runs=$(grep -c ',task,' "$work/single.csv" || true)
# The methods must differ on every task, or the comparison below could not tell their records apart.
if ! awk -F, '$2 == "task" { key = $4 SUBSEP $6; if ((key in seen) && seen[key] != $3) { print "FAIL: task " $4 ": " seen[key] " and " $3 " both score " $6; bad = 1 } seen[key] = $3 }
              END { exit bad }' "$work/single.csv"; then
  echo "FAIL: methods score identically, so a swapped record would go unnoticed (train longer: SLURM_TEST_ARGS)" >&2
  cat "$work/single.csv" >&2
  exit 1
fi
[[ "$runs" -gt 0 ]] || { echo "FAIL: no task rows in the single-process table" >&2; exit 1; }
if ! diff -u "$work/single.csv" "$work/merged.csv"; then
  echo "FAIL: the merged table differs from the single-process one" >&2
  exit 1
fi
"$harness" compare "$work/single" "$work/merged"
echo "PASS: $runs task cells of the job array equal the single-process run ($repo)"
