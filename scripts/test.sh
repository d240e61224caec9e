#!/usr/bin/env bash
# The project's test command (README.md): starts the services the
# integration tests need, then runs gofmt, go vet, the whole test suite with
# the race detector, and each fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== server restarts (alone, since they disrupt the shared servers)"
# PostgreSQL restarted under the CDC relay; RabbitMQ restarted and put under
# a memory alarm under the adapter. Skipped by the main run above.
EVENTKIT_TEST_PG_RESTART=1 go test -race -count=1 -run '^TestPostgresRestart$' ./outbox/pgcdc
EVENTKIT_RABBITMQ_RESTART=1 go test -race -count=1 -run '^(TestDurableAcrossRestart|TestPublishBlocked)$' ./broker/rabbitmq
bash scripts/services.sh

echo "== fuzz (${FUZZTIME:=5s} each)"
# Every Fuzz target in the module, each on its own for a short while.
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/func //'); do
    echo "-- $pkg $f"
    go test -run '^$' -fuzz "^${f}\$" -fuzztime "$FUZZTIME" "$pkg"
  done
done
echo "== all tests passed"
