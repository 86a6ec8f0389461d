#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer before the tests run; starts them when they
# are installed here but stopped. With CI=true a service that cannot be reached fails.
set -uo pipefail

pg_host=127.0.0.1 pg_port=5432 mq_host=127.0.0.1 mq_port=5672

up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 60); do up "$1" "$2" && return 0; sleep 1; done
  return 1
}

if ! up $pg_host $pg_port && command -v pg_ctlcluster >/dev/null; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! up $mq_host $mq_port && command -v rabbitmq-server >/dev/null; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
fi

status=0
wait_up $pg_host $pg_port || { echo "services: PostgreSQL is not reachable on $pg_host:$pg_port"; status=1; }
wait_up $mq_host $mq_port || { echo "services: RabbitMQ is not reachable on $mq_host:$mq_port"; status=1; }
# RabbitMQ opens its port before it accepts AMQP sessions; wait until it does.
if [ $status -eq 0 ] && command -v rabbitmqctl >/dev/null; then
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
exit $status
