#!/usr/bin/env bash
# Axon cluster mode on one machine: every service its own process (with replicas)
# over Kafka (scripts/kafka.sh) and PostgreSQL (scripts/postgres.sh), behind nginx.
#   scripts/cluster.sh start|stop|status
# Env (defaults):
#   CLUSTER_DIR ($AXON_RUN_DIR/cluster, AXON_RUN_DIR defaults to .run): config, PIDs, logs/
#   ROUTER_PORT (8008)   BASE_PORT (18100): services listen on BASE_PORT, BASE_PORT+1, ...
#   ROOMSERVERS SYNCAPIS CLIENTAPIS USERAPIS MEDIAAPIS FEDERATIONAPIS APPSERVICES (1 each)
#   AS_CONFIG_FILES (""): application service registration files, colon-separated
#   FEDERATION (""): 1 serves the federation routes (federation.enabled)
#   FEDERATION_LOOPBACK (""): 1 = tests only: private addresses, self-signed peers, no notary
#   TLS_PORT ("") TLS_CERT TLS_KEY: the router also listens with TLS on TLS_PORT (the
#     federation entry point; SERVER_NAME 127.0.0.1:$TLS_PORT reaches it without discovery)
#   SERVER_NAME (localhost:$ROUTER_PORT)   BCRYPT_ROUNDS (12)
#   PG_PORT (55432) KAFKA_PORT (59092)   CLUSTER_DB (axon_cluster)
#   SCHEMA_PREFIX ("")  TOPIC_PREFIX (axon.cluster.)   READY_TIMEOUT (180 s)
# `stop` stops only the processes recorded in $CLUSTER_DIR/pids (not Kafka/PostgreSQL).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${AXON_RUN_DIR:-$ROOT/.run}
CDIR=${CLUSTER_DIR:-$RUN/cluster}
PY=${PYTHON:-$ROOT/.venv/bin/python}
ROUTER_PORT=${ROUTER_PORT:-8008}
BASE_PORT=${BASE_PORT:-18100}
PG_PORT=${PG_PORT:-55432}
KAFKA_PORT=${KAFKA_PORT:-59092}
CLUSTER_DB=${CLUSTER_DB:-axon_cluster}
PIDS=$CDIR/pids

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A PID from our file counts only if it is still the process we started.
ours() {
  local pid=$1 what=$2
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$what"
}

nginx_bin() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

ensure_nginx() {
  if [ -z "$(nginx_bin)" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq nginx >/dev/null
  fi
}

start() {
  if [ -f "$PIDS" ] && while read -r pid what _; do ours "$pid" "$what" && exit 0; done < "$PIDS"; then
    if grep -q . "$PIDS" && status >/dev/null 2>&1; then echo "cluster: already running ($CDIR)"; return 0; fi
    echo "cluster: processes of an earlier start are still alive; run '$0 stop' first"; return 1
  fi
  if port_open "$ROUTER_PORT"; then echo "cluster: port $ROUTER_PORT is in use (set ROUTER_PORT)"; return 1; fi
  if [ -n "${TLS_PORT:-}" ] && port_open "$TLS_PORT"; then echo "cluster: port $TLS_PORT is in use (set TLS_PORT)"; return 1; fi
  port_open "$PG_PORT" || PG_PORT=$PG_PORT "$ROOT/scripts/postgres.sh" start
  PG_PORT=$PG_PORT "$ROOT/scripts/postgres.sh" createdb "$CLUSTER_DB"
  port_open "$KAFKA_PORT" || KAFKA_PORT=$KAFKA_PORT "$ROOT/scripts/kafka.sh" start
  ensure_nginx
  mkdir -p "$CDIR/logs" "$CDIR/nginx-tmp"
  : > "$PIDS"
  local replicas="roomserver=${ROOMSERVERS:-1},syncapi=${SYNCAPIS:-1},clientapi=${CLIENTAPIS:-1}"
  replicas+=",userapi=${USERAPIS:-1},mediaapi=${MEDIAAPIS:-1},federationapi=${FEDERATIONAPIS:-1}"
  replicas+=",appservice=${APPSERVICES:-1}"
  local extra=()
  local f
  IFS=: read -ra _as_files <<< "${AS_CONFIG_FILES:-}"
  for f in "${_as_files[@]+"${_as_files[@]}"}"; do [ -n "$f" ] && extra+=(--app-service-config "$f"); done
  [ "${FEDERATION:-}" = 1 ] && extra+=(--federation)
  [ "${FEDERATION_LOOPBACK:-}" = 1 ] && extra+=(--federation-loopback)
  local tls=()
  [ -n "${TLS_PORT:-}" ] && tls=(--tls-port "$TLS_PORT" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
  "$PY" -m axon.cluster gen-config --run-dir "$CDIR" --server-name "${SERVER_NAME:-localhost:$ROUTER_PORT}" \
    --router-port "$ROUTER_PORT" --base-port "$BASE_PORT" --replicas "$replicas" \
    --postgres "postgresql://postgres@127.0.0.1:$PG_PORT/$CLUSTER_DB" --kafka "127.0.0.1:$KAFKA_PORT" \
    --schema-prefix "${SCHEMA_PREFIX:-}" --topic-prefix "${TOPIC_PREFIX:-axon.cluster.}" \
    --bcrypt-rounds "${BCRYPT_ROUNDS:-12}" "${extra[@]+"${extra[@]}"}"
  while read -r name port; do
    if port_open "$port"; then echo "cluster: port $port is in use (set BASE_PORT)"; return 1; fi
  done < "$CDIR/plan"
  "$PY" -m axon.cluster init --config "$CDIR/config.yaml"
  "$PY" -m axon.cluster nginx --config "$CDIR/config.yaml" --plan "$CDIR/plan" --run-dir "$CDIR" \
    --listen-port "$ROUTER_PORT" --out "$CDIR/nginx.conf" "${tls[@]+"${tls[@]}"}"
  while read -r name port; do
    nohup "$PY" -m axon.cli run-service "$name" --config "$CDIR/config.yaml" --port "$port" \
      > "$CDIR/logs/$name-$port.log" 2>&1 < /dev/null &
    echo "$! run-service $name $port" >> "$PIDS"
  done < "$CDIR/plan"
  "$(nginx_bin)" -c "$CDIR/nginx.conf" -p "$CDIR" > "$CDIR/logs/nginx.log" 2>&1 < /dev/null &
  echo "$! nginx router $ROUTER_PORT" >> "$PIDS"
  if ! "$PY" -m axon.cluster wait-ready --plan "$CDIR/plan" --extra-port "$ROUTER_PORT" --pids "$PIDS" \
       --timeout "${READY_TIMEOUT:-180}"; then
    echo "cluster: not ready; logs under $CDIR/logs"; tail -n 20 "$CDIR"/logs/*.log; return 1
  fi
  echo "cluster: ready on http://127.0.0.1:$ROUTER_PORT ($(wc -l < "$CDIR/plan") service processes; $CDIR)"
}

stop() {
  [ -f "$PIDS" ] || { echo "cluster: nothing to stop ($CDIR)"; return 0; }
  local alive=()
  while read -r pid what _; do
    if ours "$pid" "$what"; then kill -TERM "$pid" 2>/dev/null || true; alive+=("$pid:$what"); fi
  done < "$PIDS"
  for _ in $(seq 1 100); do
    local left=()
    for e in "${alive[@]+"${alive[@]}"}"; do ours "${e%%:*}" "${e#*:}" && left+=("$e"); done
    alive=("${left[@]+"${left[@]}"}")
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.1
  done
  for e in "${alive[@]+"${alive[@]}"}"; do kill -KILL "${e%%:*}" 2>/dev/null || true; done
  rm -f "$PIDS"
  echo "cluster: stopped"
}

status() {
  [ -f "$PIDS" ] || { echo "cluster: not started ($CDIR)"; return 1; }
  local bad=0
  while read -r pid what name port; do
    local state=dead
    if ours "$pid" "$what"; then
      state=alive
      if [ "$what" = run-service ]; then
        code=$("$PY" - "$port" <<'PYEOF' 2>/dev/null || echo 000
import sys, httpx
try:
    print(httpx.get(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=3).status_code)
except httpx.HTTPError:
    print("000")
PYEOF
)
        [ "$code" = 200 ] && state=ready || state="not-ready($code)"
      fi
    fi
    [ "$state" = ready ] || [ "$what" = nginx ] && [ "$state" != dead ] || bad=1
    printf '%-8s %-14s %-6s %s\n' "$pid" "$name" "$port" "$state"
  done < "$PIDS"
  return $bad
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
