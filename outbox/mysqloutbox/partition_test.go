package mysqloutbox_test

import (
	"context"
	"testing"

	"github.com/eventkit/eventkit/outbox/mysqloutbox"
	"github.com/eventkit/eventkit/outbox/outboxtest"
)

// TestRelayPartitioned runs the relay suite on an outbox split into 4
// partitions.
func TestRelayPartitioned(t *testing.T) {
	outboxtest.RunRelay(t, func(t *testing.T) outboxtest.Harness {
		h := harness(t)
		if err := h.Store.(*mysqloutbox.Store).SetPartitions(context.Background(), 4); err != nil {
			t.Fatal(err)
		}
		h.Partitions = 4
		return h
	}, outboxtest.Polling)
}

// TestPartitionLeases runs the lease cases on MariaDB.
func TestPartitionLeases(t *testing.T) { outboxtest.RunPartitions(t, harness) }

func TestPartitionOfMatchesSQL(t *testing.T) {
	db := openDB(t)
	for _, subj := range []string{"", "a", "order-17", "ünïcode", "s99"} {
		for _, n := range []int{2, 16, 7} {
			var got int
			if err := db.QueryRow(`SELECT CONV(SUBSTR(MD5(?), 1, 7), 16, 10) % ?`, subj, n).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if want := mysqloutbox.PartitionOf(subj, n); got != want {
				t.Fatalf("PartitionOf(%q, %d) = %d, database says %d", subj, n, want, got)
			}
		}
	}
}
