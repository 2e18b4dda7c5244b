#!/usr/bin/env bash
# Provision and run a single-node Apache Kafka 4.x broker in KRaft mode, no Docker.
# The broker jars are resolved from Maven Central with `mvn dependency:copy-dependencies`.
#   scripts/kafka.sh install|start|stop|status
# Env: AXON_RUN_DIR (default .run), KAFKA_VERSION, KAFKA_PORT (59092), KAFKA_CONTROLLER_PORT (59093),
#   KAFKA_DIR ($AXON_RUN_DIR/kafka: config, data, pid, log), KAFKA_LIBS ($KAFKA_DIR/libs-$KAFKA_VERSION:
#   the broker jars; point a second broker at an installed set), KAFKA_HEAP (-Xms256m -Xmx768m)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${AXON_RUN_DIR:-$ROOT/.run}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
PORT=${KAFKA_PORT:-59092}
CPORT=${KAFKA_CONTROLLER_PORT:-59093}
DIR=${KAFKA_DIR:-$RUN/kafka}
LIBS=${KAFKA_LIBS:-$DIR/libs-$KAFKA_VERSION}
HEAP=${KAFKA_HEAP:--Xms256m -Xmx768m}

install() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
  command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven; }
  mkdir -p "$DIR/pom"
  sed "s/@KAFKA_VERSION@/$KAFKA_VERSION/g" "$ROOT/scripts/kafka-pom.xml" > "$DIR/pom/pom.xml"
  (cd "$DIR/pom" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$DIR/data"
  cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
log.segment.bytes=67108864
message.max.bytes=2097152
PROPS
  cat > "$DIR/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
PROPS
}

java_cmd() {
  java $HEAP -XX:+UseG1GC -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
       -cp "$LIBS/*" "$@"
}

ready() { (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; }

start() {
  install
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && ready; then
    echo "kafka: already running on 127.0.0.1:$PORT"; return 0
  fi
  write_config
  if [ ! -f "$DIR/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$DIR/server.properties" >/dev/null
  fi
  nohup bash -c "exec java $HEAP -XX:+UseG1GC -Dlog4j2.configurationFile='$DIR/log4j2.properties' -cp '$LIBS/*' kafka.Kafka '$DIR/server.properties'" \
    > "$DIR/broker.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pid"
  for _ in $(seq 1 120); do
    if ready; then echo "kafka: ready on 127.0.0.1:$PORT"; return 0; fi
    kill -0 "$(cat "$DIR/pid")" 2>/dev/null || { echo "kafka: broker exited"; tail -50 "$DIR/broker.log"; return 1; }
    sleep 1
  done
  echo "kafka: not ready after 120 s"; tail -50 "$DIR/broker.log"; return 1
}

stop() {
  if [ -f "$DIR/pid" ]; then
    pid=$(cat "$DIR/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/pid"
  fi
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) ready && echo running || { echo stopped; exit 1; } ;;
  *) echo "usage: $0 install|start|stop|status"; exit 2 ;;
esac
