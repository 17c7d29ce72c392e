#!/usr/bin/env bash
# Runs a real Apache Kafka 4.x broker on 127.0.0.1 for the event-log tests (test/events/kafka.test.ts).
#
#   scripts/services/kafka.sh install   collect the broker's jars into .tmp/kafka/jars (idempotent)
#   scripts/services/kafka.sh start     install if needed, format the storage once, start the broker,
#                                       wait until it answers; prints its bootstrap address
#   scripts/services/kafka.sh stop      stop the broker this script started (SIGTERM, then SIGKILL)
#   scripts/services/kafka.sh status    "running 127.0.0.1:PORT (pid N)" or "stopped"; exit 0 if running
#   scripts/services/kafka.sh reset     stop, and delete the broker's data (the jars stay)
#
# Why this way: the project's machines reach only package registries, so there is no Apache mirror
# tarball and no container image. Maven Central serves every Kafka jar, so a throwaway pom
# (.tmp/kafka/pom.xml) depending on org.apache.kafka:kafka_2.13 (the broker, `kafka.Kafka`, and
# `kafka.tools.StorageTool`), plus Log4j 2 for its logging, is resolved with
# `mvn dependency:copy-dependencies`, and the broker runs from that class path with the machine's
# Java 17. KRaft mode, one process acting as broker and controller, no ZooKeeper (gone in 4.x).
#
# Install from scratch (empty ~/.m2): about 20 s here (Maven's dependency plugin and 46 jars,
# ~40 MB); later runs are instant. Start: 5-15 s on a busy 2-core machine (JVM start, metadata
# log). The broker uses a 512 MiB heap.
# Version 4.1.1: the newest 4.x line within @platformatic/kafka 1.x's supported range (3.5-4.1).
#
# State, all under .tmp/ (git-ignored):
#   .tmp/kafka/jars/            the class path          .tmp/kafka/data/   log.dirs (topics, metadata)
#   .tmp/kafka/server.properties                        .tmp/kafka/broker.log   its console output
#   .tmp/services/kafka.pid     pid of the broker       .tmp/services/kafka.env  KAFKA_BOOTSTRAP=..., ports
# The ports are chosen free on the first start and reused later (the data directory remembers the
# controller's address), so clients reconnect to the same address after a restart.
#
# Environment: KAFKA_VERSION (default 4.1.1), KAFKA_HEAP (default -Xmx512m -Xms128m).
set -u

here="$(cd "$(dirname "$0")/../.." && pwd)"
base="$here/.tmp/kafka"
jars="$base/jars"
data="$base/data"
props="$base/server.properties"
svc="$here/.tmp/services"
pidfile="$svc/kafka.pid"
envfile="$svc/kafka.env"
version="${KAFKA_VERSION:-4.1.1}"
log4j_version="2.24.3"
# Kafka's own poms pull slf4j-api 1.7 in transitively; the Log4j 2 binding needs 2.x.
slf4j_version="2.0.17"
heap="${KAFKA_HEAP:--Xmx512m -Xms128m}"

say() { echo "kafka.sh: $*" >&2; }

installed() { [ -f "$jars/.complete-$version-2" ]; }

install() {
  if installed; then return 0; fi
  command -v java >/dev/null 2>&1 || { say "java not found (Kafka 4.x needs Java 17+)"; return 1; }
  command -v mvn >/dev/null 2>&1 || { say "mvn not found (apt-get install maven)"; return 1; }
  mkdir -p "$base"
  cat >"$base/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>stowage.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$log4j_version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$log4j_version</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$slf4j_version</version></dependency>
  </dependencies>
</project>
POM
  say "resolving org.apache.kafka:kafka_2.13:$version from Maven Central (first time: a minute or two)"
  rm -rf "$jars.partial"
  if ! (cd "$base" && mvn -q -B -ntp -f pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$jars.partial") >&2; then
    say "maven failed to resolve the Kafka jars"
    rm -rf "$jars.partial"
    return 1
  fi
  rm -rf "$jars"
  mv "$jars.partial" "$jars"
  touch "$jars/.complete-$version-2"
  say "installed $(ls "$jars"/*.jar | wc -l) jars into $jars"
}

# Alive = exists and is not a zombie (a killed broker whose parent has gone may linger as one until
# reaped, and `kill -0` still succeeds on it).
pid_alive() {
  [ -f "$pidfile" ] || return 1
  local pid state
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)"
  [ -n "$state" ] && [ "$state" != "Z" ]
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

# Answers when a TCP connection to the broker port succeeds and the broker has logged that it started.
answers() {
  local port="$1"
  node -e '
    const s = require("net").connect({ host: "127.0.0.1", port: Number(process.argv[1]) });
    s.on("connect", () => { s.destroy(); process.exit(0); });
    s.on("error", () => process.exit(1));
    setTimeout(() => process.exit(1), 1000);' "$port" 2>/dev/null &&
    grep -q "Kafka Server started\|\[KafkaRaftServer nodeId=1\] Kafka Server started" "$base/broker.log" 2>/dev/null
}

write_config() {
  local port="$1" cport="$2"
  mkdir -p "$data"
  cat >"$props" <<PROPS
# written by scripts/services/kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=1000
log.segment.bytes=16777216
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
PROPS
  cat >"$base/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.Kafka
        level: INFO
LOG
}

start() {
  install || return 1
  mkdir -p "$svc"
  if pid_alive; then
    # shellcheck disable=SC1090
    . "$envfile"
    echo "$KAFKA_BOOTSTRAP"
    return 0
  fi
  local port cport
  if [ -f "$envfile" ] && [ -f "$data/meta.properties" ]; then
    # shellcheck disable=SC1090
    . "$envfile"
    port="$KAFKA_PORT" cport="$KAFKA_CONTROLLER_PORT"
  else
    port="$(free_port)" cport="$(free_port)"
    while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
    rm -rf "$data"
    write_config "$port" "$cport"
    local cluster
    cluster="$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" || return 1
    if ! java -Dlog4j2.configurationFile="$base/log4j2.yaml" -cp "$jars/*" kafka.tools.StorageTool format \
        -t "$cluster" -c "$props" >"$base/format.log" 2>&1; then
      say "formatting the storage failed:"; cat "$base/format.log" >&2
      return 1
    fi
    printf 'KAFKA_BOOTSTRAP=127.0.0.1:%s\nKAFKA_PORT=%s\nKAFKA_CONTROLLER_PORT=%s\nKAFKA_VERSION=%s\n' \
      "$port" "$port" "$cport" "$version" >"$envfile"
  fi
  : >"$base/broker.log"
  # setsid: its own process group, so a Ctrl-C in the starting shell does not reach it.
  # shellcheck disable=SC2086
  setsid java $heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$base/log4j2.yaml" \
    -cp "$jars/*" kafka.Kafka "$props" >>"$base/broker.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  while ! answers "$port"; do
    if ! pid_alive; then
      say "the broker exited while starting; the end of $base/broker.log:"
      tail -n 30 "$base/broker.log" >&2
      rm -f "$pidfile"
      return 1
    fi
    if [ "$waited" -ge 120 ]; then
      say "the broker did not answer on 127.0.0.1:$port within 60 s; stopping it"
      stop
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  say "broker $version running on 127.0.0.1:$port (pid $(cat "$pidfile"), started in about $((waited / 2)) s)"
  echo "127.0.0.1:$port"
}

stop() {
  if ! [ -f "$pidfile" ]; then return 0; fi
  local pid
  pid="$(cat "$pidfile")"
  # Only the process this script started: check that the pid is still a kafka.Kafka java process.
  if pid_alive && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka"; then
    kill -TERM "$pid" 2>/dev/null
    local i=0
    while pid_alive && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    if pid_alive; then
      say "broker $pid ignored SIGTERM for 30 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$pidfile"
}

status() {
  if pid_alive; then
    # shellcheck disable=SC1090
    . "$envfile"
    echo "running $KAFKA_BOOTSTRAP (pid $(cat "$pidfile"))"
    return 0
  fi
  if installed; then echo "stopped (installed: $version)"; else echo "stopped (not installed)"; fi
  return 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) stop && rm -rf "$data" "$envfile" "$props" ;;
  *) echo "usage: $0 {install|start|stop|status|reset}" >&2; exit 2 ;;
esac
