#!/usr/bin/env bash
# shellcheck disable=SC2329  # on_exit/on_term (and what they call) run from `trap`
# newsclf training VM: run one `newsclf job` in the training image, upload its log, power off.
#
# Compute Engine runs this as root at every boot (the startup-script metadata), so it is safe to
# re-run: a run with a final status.json in the bucket is not run again, and an interrupted run
# (spot preemption, reboot) starts again and `newsclf job` resumes it from runs/ID/checkpoints.
# The job's output goes to the serial port as `newsclf-job[RUN_ID]: ...` (what `newsclf cloud run`
# shows) and this script's progress as `newsclf-vm[RUN_ID]: ...`.
# Secrets (the access token, the W&B key) never reach argv, the serial port, the log or the image.
# Every path powers the VM off at the end (unless newsclf-keep-vm is true), also when the metadata
# server cannot be read: an idle VM bills until --max-hours.
# Tests point the NEWSCLF_* / STORAGE_EMULATOR_HOST variables below at local stand-ins.
set -euo pipefail

META_URL="${NEWSCLF_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
SERIAL="${NEWSCLF_SERIAL_DEVICE:-/dev/ttyS0}"
STORAGE_URL="${STORAGE_EMULATOR_HOST:-https://storage.googleapis.com}"
SECRETS_URL="${NEWSCLF_SECRETMANAGER_URL:-https://secretmanager.googleapis.com}"
WORK="${NEWSCLF_WORKDIR:-/var/lib/newsclf}"
META_WAIT_S="${NEWSCLF_METADATA_WAIT_S:-300}"  # the metadata server can lag the network at boot
NVIDIA_REPO="${NEWSCLF_NVIDIA_REPO_URL:-https://nvidia.github.io/libnvidia-container}"
CONTAINER=newsclf-job
MIN_DRIVER=580  # the image's torch is a CUDA 13 build (uv.lock); CUDA 13 needs driver 580 or newer

RUN_ID="?"
KEEP_VM=false  # until the metadata says otherwise
STARTED_AT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"  # newsclf/runstate.py TIMESTAMP_FORMAT
LOG_NAME="vm-$(date -u +%Y%m%dT%H%M%SZ).log"
LOG="$WORK/$LOG_NAME"
SETTLED=0   # 1 once the run's outcome is in the bucket (or there is nothing to do)
UPLOAD=1    # 0: nothing worth uploading (the run had already finished)
STOPPING=0  # 1 when the VM is shutting down under us (stop, preemption): the run resumes later

meta() { curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$META_URL/$1"; }
attr() {  # an instance attribute: a missing one (HTTP 404) reads as empty, an unreachable server fails
  local rc=0
  meta "instance/attributes/$1" 2>/dev/null || rc=$?
  ((rc == 0 || rc == 22)) # 22: curl -f got an HTTP error
}

wait_for_metadata() {  # any HTTP answer will do: the server is up
  local deadline=$((SECONDS + META_WAIT_S))
  until curl -sS -o /dev/null --max-time 10 -H 'Metadata-Flavor: Google' "$META_URL/instance/attributes/" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 5
  done
}

json_field() {  # json_field KEY < JSON: prints the value, or nothing for bad JSON / a missing key
  python3 -c 'import json, sys
try:
    value = json.load(sys.stdin).get(sys.argv[1])
except (ValueError, AttributeError):
    value = None
print("" if value is None else value)' "$1"
}

token() { meta instance/service-accounts/default/token | json_field access_token; }

gcurl() {  # curl with the VM's access token, handed over as curl config on stdin: never in argv
  local tok
  tok="$(token)"
  printf 'header = "Authorization: Bearer %s"\n' "$tok" | curl -fsS --retry 3 -K - "$@"
}

object() { printf '%s' "$1" | sed 's#/#%2F#g'; }  # object name for a JSON API URL path
gcs_get() { gcurl "$STORAGE_URL/storage/v1/b/$BUCKET/o/$(object "$1")?alt=media"; }
gcs_put() {  # gcs_put FILE NAME CONTENT_TYPE
  gcurl -X POST -H "Content-Type: $3" --data-binary "@$1" \
    "$STORAGE_URL/upload/storage/v1/b/$BUCKET/o?uploadType=media&name=$(object "$2")" >/dev/null
}

run_status() { gcs_get "runs/$RUN_ID/status.json" 2>/dev/null || true; }
run_state() { run_status | json_field state; }  # running|succeeded|failed, or empty

say() {  # a progress line: serial port (for `newsclf cloud run`), the run's log, the journal
  local line="newsclf-vm[$RUN_ID]: $*"
  printf '%s\n' "$line" >>"$SERIAL" 2>/dev/null || true
  printf '%s\n' "$line" >>"$LOG" 2>/dev/null || true
  printf '%s\n' "$line"
}

shown_args() {  # the arguments for the log: values of options named *key*, *token*, *secret*, *password* masked
  local arg name hide=0 out=()
  for arg in "$@"; do
    name="${arg%%=*}"
    if ((hide)); then
      out+=("****")
      hide=0
    elif [[ "${name,,}" =~ ^--?([a-z0-9]+[-_])*(api-?key|key|token|secret|passw(or)?d)([-_][a-z0-9]+)*$ ]]; then
      if [[ "$arg" == *=* ]]; then
        out+=("$name=****")
      else
        out+=("$arg")
        hide=1
      fi
    else
      out+=("$arg")
    fi
  done
  printf '%s' "${out[*]}"
}

preempted() { [[ "$(meta instance/preempted 2>/dev/null || true)" == TRUE ]]; }

write_failed() {  # write_failed EXIT_CODE ERROR: a final status.json, unless the job wrote one
  local prev
  prev="$(run_status)"
  case "$(printf '%s' "$prev" | json_field state)" in succeeded | failed) return 0 ;; esac
  # newsclf/runstate.py's schema and timestamp format (tests/test_runstate.py checks this document)
  printf '%s' "$prev" | python3 -c 'import json, socket, sys, time
try:
    prev = json.load(sys.stdin)
except ValueError:
    prev = {}
prev = prev if isinstance(prev, dict) else {}
code, error, run_id, boot = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
this_boot = str(prev.get("started_at") or "") >= boot  # the job started this attempt: it is the same one
attempt = int(prev.get("attempt") or 0) + (0 if this_boot else 1)
print(json.dumps({"run_id": run_id, "state": "failed", "exit_code": code,
                  "started_at": prev.get("started_at") if this_boot else boot,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "attempt": max(attempt, 1), "host": socket.gethostname(), "error": error}))' \
    "$1" "$2" "$RUN_ID" "$STARTED_AT" >"$WORK/status.json"
  gcs_put "$WORK/status.json" "runs/$RUN_ID/status.json" application/json
}

fail_run() {  # fail_run ERROR: a final status.json naming the problem; on_exit then powers off
  say "$1"
  write_failed 1 "$1" || say "could not write runs/$RUN_ID/status.json"
  SETTLED=1
  exit 1
}

apt_install() {  # apt_install PACKAGE...: waits for a boot-time apt run (unattended-upgrades) to let go
  local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
  {
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update &&
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@"
  } >>"$LOG" 2>&1
}

add_nvidia_repo() {  # NVIDIA's apt repository (its install guide), staged in $WORK until both parts arrived
  local key=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL --retry 3 "$NVIDIA_REPO/gpgkey" -o "$WORK/nvidia.gpgkey" &&
    curl -fsSL --retry 3 "$NVIDIA_REPO/stable/deb/nvidia-container-toolkit.list" -o "$WORK/nvidia.list" &&
    gpg --batch --yes --dearmor -o "$key" "$WORK/nvidia.gpgkey" &&
    sed "s#deb https://#deb [signed-by=$key] https://#g" "$WORK/nvidia.list" \
      >/etc/apt/sources.list.d/nvidia-container-toolkit.list
}

ensure_docker() {  # Google does not promise docker on its Deep Learning VM images
  command -v docker >/dev/null 2>&1 && return 0
  say "docker is not installed on this VM image: installing docker.io"
  if ! apt_install docker.io || ! command -v docker >/dev/null 2>&1; then
    local error="docker is missing on the VM and installing docker.io with apt-get failed (see runs/$RUN_ID/logs/):"
    fail_run "$error set NEWSCLF_VM_IMAGE_FAMILY to an image with docker, or let the VM reach the Ubuntu archive"
  fi
  systemctl enable --now docker >>"$LOG" 2>&1 || true  # the package starts it; this only makes sure
}

ensure_gpu_runtime() {  # `docker run --gpus` needs the NVIDIA Container Toolkit
  command -v nvidia-ctk >/dev/null 2>&1 && return 0
  say "the NVIDIA Container Toolkit is not installed on this VM image: installing nvidia-container-toolkit"
  if ! apt_install nvidia-container-toolkit; then
    say "nvidia-container-toolkit is not in the configured apt sources: adding NVIDIA's repository"
    add_nvidia_repo >>"$LOG" 2>&1 && apt_install nvidia-container-toolkit || true
  fi
  if ! command -v nvidia-ctk >/dev/null 2>&1; then
    local error="the NVIDIA Container Toolkit is missing on the VM and installing nvidia-container-toolkit failed"
    fail_run "$error (see runs/$RUN_ID/logs/): set NEWSCLF_VM_IMAGE_FAMILY to an image with it, or let the VM reach $NVIDIA_REPO"
  fi
  if ! nvidia-ctk runtime configure --runtime=docker >>"$LOG" 2>&1 || ! systemctl restart docker >>"$LOG" 2>&1; then
    fail_run "could not configure docker's NVIDIA runtime (nvidia-ctk runtime configure; see runs/$RUN_ID/logs/)"
  fi
}

power_off() {
  if [[ "$KEEP_VM" == true ]]; then
    say "keep-vm is set: the VM stays up (stop it with: newsclf cloud stop)"
    return 0
  fi
  say "powering off"
  shutdown -h now
}

on_term() {
  STOPPING=1
  exit 143
}

on_exit() {
  local rc=$?
  trap - EXIT
  set +e
  rm -f "$WORK/job.env"
  if [[ "$RUN_ID" == "?" ]]; then  # no run to record (no metadata, no run id): only power off
    [[ "$STOPPING" == 1 ]] || power_off
    exit "$rc"
  fi
  if [[ "$STOPPING" == 1 ]] || preempted; then
    say "the VM is stopping; the run resumes from its checkpoints when the VM starts again"
    gcs_put "$LOG" "runs/$RUN_ID/logs/$LOG_NAME" text/plain
    exit "$rc"
  fi
  if [[ "$SETTLED" != 1 ]]; then
    say "startup failed (exit $rc) before the job finished"
    write_failed "$((rc == 0 ? 1 : rc))" "the VM startup script failed (exit $rc); see runs/$RUN_ID/logs/" ||
      say "could not write runs/$RUN_ID/status.json"
  fi
  if [[ "$UPLOAD" == 1 ]]; then
    gcs_put "$LOG" "runs/$RUN_ID/logs/$LOG_NAME" text/plain || say "could not upload the log"
  fi
  power_off
  exit "$rc"
}

trap on_term TERM INT
trap on_exit EXIT

mkdir -p "$WORK"
chmod 700 "$WORK"

if ! wait_for_metadata; then
  say "the metadata server ($META_URL) did not answer for ${META_WAIT_S}s: cannot tell which run to start"
  exit 1
fi
KEEP_VM="$(attr newsclf-keep-vm)"
RUN_ID="$(attr newsclf-run-id)"
if [[ ! "$RUN_ID" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
  RUN_ID="?"
  say "no valid newsclf-run-id in the instance metadata: nothing to do"
  exit 0
fi
IMAGE="$(attr newsclf-image)"
BUCKET="$(attr newsclf-bucket)"
GPUS="$(attr newsclf-gpus)"
WANDB_SECRET="$(attr newsclf-wandb-secret)"
train_args="$(attr newsclf-train-args)"
TRAIN_ARGS=()
[[ -z "$train_args" ]] || mapfile -t TRAIN_ARGS <<<"$train_args" # one argument per line
[[ "$GPUS" =~ ^[0-9]+$ ]] || GPUS=0

say "starting run $RUN_ID with $IMAGE"
if [[ -z "$IMAGE" || -z "$BUCKET" ]]; then
  say "newsclf-image or newsclf-bucket is missing from the instance metadata"
  exit 1
fi

state="$(run_state)"
case "$state" in
  succeeded | failed)
    say "run $RUN_ID already finished ($state): not running it again"
    SETTLED=1
    UPLOAD=0
    exit 0
    ;;
  running | interrupted) say "run $RUN_ID was interrupted: resuming it from its checkpoints" ;;
esac

GPU_FLAGS=()
if ((GPUS > 0)); then
  say "waiting for the NVIDIA driver"
  for _ in $(seq 1 60); do
    nvidia-smi >/dev/null 2>&1 && break
    sleep 10
  done
  if ! nvidia-smi >/dev/null 2>&1; then
    say "no working NVIDIA driver after 10 minutes"
    exit 1
  fi
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
  if [[ "${driver%%.*}" =~ ^[0-9]+$ ]] && ((${driver%%.*} < MIN_DRIVER)); then
    # the container would see no GPU and train on the CPU for hours on a GPU VM: fail now instead
    error="NVIDIA driver $driver is older than $MIN_DRIVER, which the image's CUDA 13 torch needs: set"
    fail_run "$error NEWSCLF_VM_IMAGE_FAMILY to a Deep Learning VM image family with driver $MIN_DRIVER or newer"
  fi
  say "NVIDIA driver $driver"
  GPU_FLAGS=(--gpus all)
fi

ensure_docker
((GPUS == 0)) || ensure_gpu_runtime

REGISTRY="${IMAGE%%/*}"
case "$REGISTRY" in
  *.pkg.dev | *gcr.io)
    say "logging docker in to $REGISTRY"
    token | docker login -u oauth2accesstoken --password-stdin "https://$REGISTRY" >>"$LOG" 2>&1
    ;;
esac

say "pulling $IMAGE"
for attempt in 1 2 3; do
  docker pull --quiet "$IMAGE" >>"$LOG" 2>&1 && break
  if [[ "$attempt" == 3 ]]; then
    say "could not pull $IMAGE"
    exit 1
  fi
  sleep 15
done

ENV_FILE="$WORK/job.env"  # secrets reach the container through this file, never through argv
(
  umask 077
  printf 'PYTHONUNBUFFERED=1\n' >"$ENV_FILE"
)
if [[ -n "$WANDB_SECRET" ]]; then
  secret="$WANDB_SECRET"
  [[ "$secret" == projects/* ]] || secret="projects/$(meta project/project-id)/secrets/$secret"
  [[ "$secret" == */versions/* ]] || secret="$secret/versions/latest"
  say "reading the W&B key from Secret Manager ($secret)"
  if key="$(gcurl "$SECRETS_URL/v1/$secret:access" | python3 -c 'import base64, json, sys
print(base64.b64decode(json.load(sys.stdin)["payload"]["data"]).decode().strip())')" && [[ -n "$key" ]]; then
    printf 'WANDB_API_KEY=%s\n' "$key" >>"$ENV_FILE"
  else
    say "could not read the W&B key from $secret: training without W&B"
  fi
  unset key
fi
wandb_key="$(attr newsclf-wandb-key)"  # explicit opt-in (`cloud run --wandb-key-in-metadata`)
if [[ -n "$wandb_key" ]]; then
  printf 'WANDB_API_KEY=%s\n' "$wandb_key" >>"$ENV_FILE"
fi
unset wandb_key

docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
say "running: newsclf job --bucket $BUCKET --run-id $RUN_ID $(shown_args "${TRAIN_ARGS[@]}")"
set +e
# --stop-timeout: on SIGTERM the job finishes its step and uploads a checkpoint (20 s at most) before docker kills it
docker run --rm --name "$CONTAINER" --network host --ipc host "${GPU_FLAGS[@]}" --stop-timeout=30 --env-file "$ENV_FILE" \
  "$IMAGE" --bucket "$BUCKET" --run-id "$RUN_ID" "${TRAIN_ARGS[@]}" 2>&1 |
  tee -a "$LOG" |
  sed -u -e 's/\r*$//' -e 's/^.*\r//' -e "s/^/newsclf-job[$RUN_ID]: /" >>"$SERIAL"
rc="${PIPESTATUS[0]}"
set -e
rm -f "$ENV_FILE"

state="$(run_state)"
case "$state" in
  succeeded | failed) say "job finished: $state (exit $rc)" ;;
  interrupted) say "job interrupted (exit $rc): the run resumes from its last checkpoint when the job starts again" ;;
  *)
    say "the job exited ($rc) without a final status.json"
    write_failed "$((rc == 0 ? 1 : rc))" "the job exited ($rc) without writing a final status.json"
    ;;
esac
SETTLED=1
exit 0
