#!/usr/bin/env bash
# A real Apache Flink session cluster on this machine, for COCO_BEAM_MODE=flink.
#
#   bash tools/flink.sh up       # or: make flink-up   (installs once, then starts)
#   bash tools/flink.sh status   # the cluster's REST overview
#   bash tools/flink.sh down     # or: make flink-down
#   bash tools/flink.sh jobserver  # only Beam's job server (and the worker pool),
#                                  # for an existing cluster at COCO_FLINK_MASTER
#   bash tools/flink.sh pid taskmanager   # a process's pid (tests/test_flink.py kills it)
#   bash tools/flink.sh log workers       # the path of a process's console log
#
# Addresses come from the COCO_FLINK_* settings (pipeline/settings.py, printed
# by `python -m pipeline.orchestration.flink shell`), so this script and the
# pipeline that uses the cluster agree on them.
#
# `up` starts four processes, each bound to loopback where it can be:
# - the Flink JobManager (StandaloneSessionClusterEntrypoint, REST on :8081)
# - one Flink TaskManager with 2 task slots (a JVM of its own)
# - Beam's Flink job server (FlinkJobServerDriver; Job API on :8099), which
#   turns each Beam pipeline into a Flink job on that cluster
# - a Beam SDK worker pool (EXTERNAL environment, :50000) beside the TaskManager:
#   the TaskManager's Python workers run in .venv, with this project's code.
#
# What it runs comes from pinned artifacts, cached by version outside the
# clone in $COCO_CACHE_DIR (default ~/.cache/coco-captions-tfx)/flink-<versions>
# and never downloaded again once there: Flink's bin/conf/lib from PyPI
# (tools/flink/requirements.txt, hash-checked), the job server's jars from
# Maven Central (tools/flink/pom.xml). Our flink-conf.yaml replaces Flink's.
#
# The JobManager and TaskManager are started with `java` directly: the
# flink-dist jar on PyPI lacks BashJavaUtils, which Flink's jobmanager.sh and
# taskmanager.sh call to size the JVM, so this script passes those sizes itself.
# Logs: <cache>/log/. Java 17 (Flink 1.16 needs the --add-opens below on it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
flink_version=1.16.3
beam_job_server=2.56.0
cache=${COCO_CACHE_DIR:-$HOME/.cache/coco-captions-tfx}/flink-$flink_version-beam-$beam_job_server
home=$cache/flink
logs=$cache/log
pids=$cache/pids
py=${PYTHON:-$root/.venv/bin/python}
eval "$(cd "$root" && "$py" -m pipeline.orchestration.flink shell)"   # rest, rest_port, job_port, pool_port

log() { echo "[flink] $*" >&2; }

# Java 17 refuses Flink 1.16's reflection into the JDK without these.
opens="--add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED \
--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
--add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED \
--add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED \
--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"

# The TaskManager's memory, as taskmanager.sh would compute it (bytes): 1 GiB
# of network buffers. TFMA's job runs many exchanges at once: with 512 MiB the
# Evaluator's job failed ("Insufficient number of network buffers: required
# 512, but only 472 available").
tm_memory="-D taskmanager.cpu.cores=2.0 \
-D taskmanager.memory.framework.heap.size=134217728b -D taskmanager.memory.task.heap.size=536870912b \
-D taskmanager.memory.framework.off-heap.size=134217728b -D taskmanager.memory.task.off-heap.size=0b \
-D taskmanager.memory.network.min=1073741824b -D taskmanager.memory.network.max=1073741824b \
-D taskmanager.memory.managed.size=268435456b -D taskmanager.memory.jvm-metaspace.size=268435456b \
-D taskmanager.memory.jvm-overhead.min=201326592b -D taskmanager.memory.jvm-overhead.max=201326592b"

install() {
  [ -f "$cache/.installed" ] && return 0
  log "installing Flink $flink_version and Beam's Flink job server $beam_job_server into $cache (once)"
  rm -rf "$cache" && mkdir -p "$cache/download" "$home"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
      --require-hashes -r "$root/tools/flink/requirements.txt" -d "$cache/download"
  tar xzf "$cache/download/apache-flink-$flink_version.tar.gz" -C "$cache/download" \
      "apache-flink-$flink_version/deps/bin" "apache-flink-$flink_version/deps/conf"
  tar xzf "$cache/download/apache-flink-libraries-$flink_version.tar.gz" -C "$cache/download" \
      "apache-flink-libraries-$flink_version/deps/lib"
  mv "$cache/download/apache-flink-$flink_version/deps/bin" "$home/bin"
  mv "$cache/download/apache-flink-$flink_version/deps/conf" "$home/conf"
  mv "$cache/download/apache-flink-libraries-$flink_version/deps/lib" "$home/lib"
  rm -rf "$cache/download"
  mvn -q -f "$root/tools/flink/pom.xml" dependency:build-classpath \
      -Dmdep.outputFile="$cache/job-server.classpath" >&2
  touch "$cache/.installed"
}

# A killed process stays a zombie until it is reaped (at once by most inits, not
# by every container's): kill -0 answers for a zombie, so its state is checked too.
running() {
  [ -f "$pids/$1" ] || return 1
  local state
  state=$(ps -o stat= -p "$(cat "$pids/$1")" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

start() {  # name, command...
  local name=$1; shift
  running "$name" && return 0
  nohup "$@" >"$logs/$name.out" 2>&1 &
  echo $! >"$pids/$name"
}

wait_for() {  # what, seconds, test command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq "$((seconds * 4))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "$what did not come up in ${seconds}s; logs: $logs"
  return 1
}

two_slots() {
  [ "$(curl -sf "$rest/overview" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["slots-total"])')" = 2 ]
}

up() {
  case "$rest" in
    http://localhost:*|http://127.0.0.1:*) ;;
    *) log "COCO_FLINK_MASTER is $rest, not this machine: \`up\` starts a cluster here; for yours, use \`jobserver\`"; return 2 ;;
  esac
  install
  mkdir -p "$logs" "$pids"
  cp "$root/tools/flink/flink-conf.yaml" "$home/conf/"
  local jvm=(java $opens "-Dlog4j.configurationFile=file:$home/conf/log4j.properties")
  start jobmanager "${jvm[@]}" -cp "$home/lib/*" -Xmx768m -Dlog.file="$logs/jobmanager.log" \
      org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint --configDir "$home/conf" \
      -D rest.port="$rest_port"
  wait_for "the JobManager ($rest)" 60 curl -sf "$rest/overview"
  # shellcheck disable=SC2086
  start taskmanager "${jvm[@]}" -cp "$home/lib/*:$(beam_runner_classpath)" -Xmx671088640 -Xms671088640 -XX:MaxDirectMemorySize=1207959552 \
      -XX:MaxMetaspaceSize=268435456 -Dlog.file="$logs/taskmanager.log" \
      org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$home/conf" $tm_memory
  wait_for "the TaskManager's 2 slots" 60 two_slots
  beam_side
  log "up: Flink $flink_version at $rest (1 TaskManager, 2 slots), Beam job server localhost:$job_port, workers localhost:$pool_port; logs $logs"
}

# The Beam jars of the job server's classpath, without Flink's own: on the
# TaskManager's classpath (loaded parent-first, flink-conf.yaml) they let Beam
# keep a job's SDK workers between its stages (--environment_cache_millis,
# pipeline/beam_args.py); from the job's own jar, Beam releases them after
# every stage, and each stage starts new Python workers.
beam_runner_classpath() {
  tr ':' '\n' <"$cache/job-server.classpath" | grep -v -e '/flink-[^/]*\.jar$' -e '/slf4j-[^/]*\.jar$' \
      -e '/log4j-[^/]*\.jar$' | paste -sd:
}

# Beam's job server, submitting to the Flink master at $rest, and the SDK
# worker pool the TaskManagers' Python workers run in (EXTERNAL environment).
beam_side() {
  # shellcheck disable=SC2086
  start jobserver java $opens -cp "$(cat "$cache/job-server.classpath")" \
      org.apache.beam.runners.flink.FlinkJobServerDriver --flink-master="${rest#http://}" \
      --job-host=localhost --job-port="$job_port" --artifact-port=0 --expansion-port=0
  # The worker pool starts each SDK worker as `python`: the venv's must come first.
  start workers env PATH="$(dirname "$py"):$PATH" "$py" -m apache_beam.runners.worker.worker_pool_main \
      --service_port="$pool_port"
  wait_for "Beam's job server (:$job_port)" 90 bash -c "exec 3<>/dev/tcp/127.0.0.1/$job_port"
  wait_for "the SDK worker pool (:$pool_port)" 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$pool_port"
}

jobserver() {
  install
  mkdir -p "$logs" "$pids"
  curl -sf "$rest/overview" >/dev/null || { log "no Flink cluster answers at $rest (COCO_FLINK_MASTER)"; return 1; }
  beam_side
  log "up: Beam job server localhost:$job_port for the Flink cluster at $rest, workers localhost:$pool_port; logs $logs"
}

down() {
  local name
  for name in workers jobserver taskmanager jobmanager; do
    if running "$name"; then
      kill "$(cat "$pids/$name")" 2>/dev/null || true
      for _ in $(seq 40); do running "$name" || break; sleep 0.25; done
      running "$name" && kill -9 "$(cat "$pids/$name")" 2>/dev/null || true
    fi
    rm -f "$pids/$name"
  done
  log "down"
}

status() { curl -sf "$rest/overview" || { log "no Flink cluster answers at $rest"; return 1; }; echo; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  install) install ;;
  jobserver) jobserver ;;
  pid) running "${2:-}" && cat "$pids/$2" ;;   # pid jobmanager|taskmanager|jobserver|workers
  log) echo "$logs/${2:?a process name}.out" ;;
  *) echo "usage: $0 up|down|status|install|jobserver|pid NAME|log NAME" >&2; exit 2 ;;
esac
