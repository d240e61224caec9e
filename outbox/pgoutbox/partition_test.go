package pgoutbox_test

import (
	"context"
	"testing"

	"github.com/eventkit/eventkit/outbox/outboxtest"
	"github.com/eventkit/eventkit/outbox/pgoutbox"
)

const suitePartitions = 4

// partHarness is harness on an outbox split into 4 partitions.
func partHarness(t *testing.T) outboxtest.Harness {
	h := harness(t)
	if err := h.Store.(*pgoutbox.Store).SetPartitions(context.Background(), suitePartitions); err != nil {
		t.Fatal(err)
	}
	h.Partitions = suitePartitions
	return h
}

// TestRelayPartitioned runs the relay suite on a partitioned outbox (pgx
// writers).
func TestRelayPartitioned(t *testing.T) {
	outboxtest.RunRelay(t, partHarness, outboxtest.Polling)
}

// TestRelayPartitionedSQLWriter runs the relay suite on a partitioned
// outbox written through database/sql transactions.
func TestRelayPartitionedSQLWriter(t *testing.T) {
	outboxtest.RunRelay(t, func(t *testing.T) outboxtest.Harness { return withSQLWriter(t, partHarness(t)) }, outboxtest.Polling)
}

// TestPartitionLeases runs the lease cases: shares, handover on join and
// leave, takeover after expiry, and a partition count that cannot change
// while relays run.
func TestPartitionLeases(t *testing.T) {
	outboxtest.RunPartitions(t, func(t *testing.T) outboxtest.Harness { return harness(t) })
}

func TestPartitionOfMatchesSQL(t *testing.T) {
	pool := newPool(t)
	for _, subj := range []string{"", "a", "order-17", "ünïcode", "s99"} {
		for _, n := range []int{2, 16, 7} {
			var got int
			if err := pool.QueryRow(context.Background(), `SELECT ((('x' || substr(md5($1), 1, 7))::bit(28)::int) % $2)`, subj, n).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if want := pgoutbox.PartitionOf(subj, n); got != want {
				t.Fatalf("PartitionOf(%q, %d) = %d, database says %d", subj, n, want, got)
			}
		}
	}
}
