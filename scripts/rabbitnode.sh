#!/usr/bin/env bash
# A private, throw-away RabbitMQ node for the tests, so no test ever
# restarts, reconfigures or puts an alarm on the machine's own RabbitMQ:
# its own node name (eventkit-PORT@localhost), config, data and log
# directories under DIR, Erlang cookie (HOME=DIR) and epmd, all on
# 127.0.0.1:
#   PORT    AMQP (guest/guest, loopback only)
#   PORT+1  AMQPS, when CERTS is given (a directory with ca.pem, server.pem,
#           server-key.pem): client certificates required and verified,
#           mechanisms PLAIN, AMQPLAIN and EXTERNAL (rabbitmq_auth_mechanism_ssl,
#           the certificate's common name is the user)
#   PORT+2  Erlang distribution (rabbitmqctl)
#   PORT+3  epmd
#
#   url=$(scripts/rabbitnode.sh start DIR PORT [CERTS])   # prints amqp://guest:guest@127.0.0.1:PORT/
#   scripts/rabbitnode.sh ctl DIR ARGS...                  # rabbitmqctl on that node (stop_app, start_app, ...)
#   scripts/rabbitnode.sh stop DIR                         # stops the node and its epmd, removes DIR
set -euo pipefail
cmd=${1:?usage: rabbitnode.sh start DIR PORT [CERTS] | ctl DIR ARGS... | stop DIR}
dir=${2:?directory}
bin=/usr/lib/rabbitmq/bin
[ -x "$bin/rabbitmq-server" ] || bin=$(dirname "$(command -v rabbitmq-server)")

# The node's environment, kept in DIR/env by start and read by ctl and stop.
nodeenv() {
  # shellcheck disable=SC1091
  . "$dir/env"
  export HOME=$dir RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf RABBITMQ_NODENAME ERL_EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1
}
as_owner() { # the node runs as the rabbitmq user when started by root (its files are that user's)
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    runuser -u rabbitmq -- env HOME="$HOME" RABBITMQ_CONF_ENV_FILE="$RABBITMQ_CONF_ENV_FILE" \
      RABBITMQ_NODENAME="$RABBITMQ_NODENAME" ERL_EPMD_PORT="$ERL_EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
      LANG=C.UTF-8 LC_ALL=C.UTF-8 "$@"
  else
    LANG=C.UTF-8 LC_ALL=C.UTF-8 "$@"
  fi
}
ctl() { as_owner "$bin/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@"; }

case "$cmd" in
start)
  port=${3:?port}
  certs=${4:-}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -e "$dir/env" ]; then echo "rabbitnode: $dir already holds a node" >&2; exit 1; fi
  node=eventkit-$port@localhost
  cat >"$dir/env" <<ENV
RABBITMQ_NODENAME=$node
ERL_EPMD_PORT=$((port + 3))
ENV
  # rabbitmq-env reads this in place of /etc/rabbitmq/rabbitmq-env.conf.
  cat >"$dir/rabbitmq-env.conf" <<ENV
NODENAME=$node
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$port
DIST_PORT=$((port + 2))
CONFIG_FILE=$dir/rabbitmq.conf
ADVANCED_CONFIG_FILE=$dir/advanced.config
MNESIA_BASE=$dir/mnesia
LOG_BASE=$dir/log
PID_FILE=$dir/rabbit.pid
ENABLED_PLUGINS_FILE=$dir/enabled_plugins
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
ENV
  {
    echo "listeners.tcp.default = 127.0.0.1:$port"
    echo "loopback_users.guest = true"
    echo "log.file.level = warning"
    echo "log.console = false"
  } >"$dir/rabbitmq.conf"
  echo "[]." >"$dir/enabled_plugins"
  if [ -n "$certs" ]; then
    cat >>"$dir/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$((port + 1))
ssl_options.cacertfile = $certs/ca.pem
ssl_options.certfile = $certs/server.pem
ssl_options.keyfile = $certs/server-key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
CONF
    echo "[rabbitmq_auth_mechanism_ssl]." >"$dir/enabled_plugins"
  fi
  echo "[]." >"$dir/advanced.config"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/.erlang.cookie"
  chmod 400 "$dir/.erlang.cookie"
  mkdir -p "$dir/mnesia" "$dir/log"
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq "$dir"; fi
  nodeenv
  # In the background with no descriptor of ours but the log, so that a
  # caller's url=$(rabbitnode.sh start ...) does not wait for the server.
  (
    cd "$dir"
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    as_owner "$bin/rabbitmq-server"
  ) </dev/null >"$dir/log/startup.log" 2>&1 &
  # await_startup fails at once while the node is not yet registered.
  up=
  for _ in $(seq 1 90); do
    if ctl await_startup --timeout 120 >/dev/null 2>&1; then up=1; break; fi
    sleep 2
  done
  if [ -z "$up" ]; then
    echo "rabbitnode: node $node did not start (see $dir/log)" >&2
    tail -20 "$dir/log/startup.log" >&2 || true
    exit 1
  fi
  echo "amqp://guest:guest@127.0.0.1:$port/"
  ;;
ctl)
  shift 2
  nodeenv
  ctl "$@"
  ;;
stop)
  [ -f "$dir/env" ] || { rm -rf "$dir"; exit 0; }
  nodeenv
  ctl shutdown >/dev/null 2>&1 || { [ -f "$dir/rabbit.pid" ] && kill "$(cat "$dir/rabbit.pid")" 2>/dev/null || true; }
  as_owner epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "rabbitnode: unknown command $cmd" >&2; exit 2 ;;
esac
