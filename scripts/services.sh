#!/usr/bin/env bash
# Starts each service the integration tests use if it is not answering.
# Idempotent. It changes no server's settings: where the system PostgreSQL
# lacks what the tests need (wal_level=logical for the CDC relay), the test
# script runs a private instance instead (scripts/pgtemp.sh). Commands are those of the go-svc machine (Debian
# packages); on another machine start the services yourself and point the
# EVENTKIT_*_URL variables at them (see internal/testenv).
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  for _ in $(seq 1 "$3"); do up "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2
  return 1
}

start() { # name port command...
  local name=$1 port=$2; shift 2
  if up "$port"; then return 0; fi
  echo "services: starting $name"
  ( "$@" ) >/dev/null 2>&1 || echo "services: could not start $name with: $*" >&2
}

pg_cluster() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

status=0
if command -v pg_ctlcluster >/dev/null 2>&1; then
  start PostgreSQL 5432 pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main start
fi
start MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
start Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start RabbitMQ 5672 rabbitmq-server -detached
start NATS 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log

wait_port PostgreSQL 5432 60 || status=1
wait_port MariaDB 3306 60 || status=1
wait_port Redis 6379 30 || status=1
wait_port RabbitMQ 5672 120 || status=1
wait_port NATS 4222 30 || status=1
exit $status
