package mysqloutbox

import (
	"context"
	"fmt"

	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

var _ outbox.Partitioned = (*Store)(nil)

// partitionExpr is the partition of a row's subject among n: the first 28
// bits of MD5(subject), modulo n (the same as outbox/pgoutbox's, and as
// PartitionOf).
func partitionExpr(n int) string {
	return fmt.Sprintf("(CONV(SUBSTR(MD5(subject), 1, 7), 16, 10) %% %d)", n)
}

// PartitionOf returns the partition of subject on an outbox of n
// partitions (what the database computes).
func PartitionOf(subject string, n int) int { return sqlutil.PartitionOf(subject, n) }

// Partitions implements outbox.Partitioned: the partition count set by
// SetPartitions (1 before it, or before migration 003).
func (s *Store) Partitions(ctx context.Context) (int, error) { return s.leases().Partitions(ctx) }

// Leases implements outbox.Partitioned with the <table>_leases and
// <table>_relays tables (database clock).
func (s *Store) Leases() outbox.Leases { return s.leases() }

func (s *Store) leases() *sqlutil.Leases {
	db := s.SQL()
	return &sqlutil.Leases{C: sqldialect.SQLConn{Q: db}, Table: s.Table(), D: sqlutil.LeaseDialect{
		Name: "outbox/mysqloutbox", SQL: sqldialect.MySQL, InTx: sqldialect.SQLInTx(db),
	}}
}

// Partition implements outbox.Partitioned: a Source whose Claim returns the
// records of partition p of n only. (MariaDB has no expression indexes:
// a partition's claim reads the pending rows of all partitions in seq
// order and keeps its own.)
func (s *Store) Partition(p, n int) outbox.Source {
	return &partition{Store: s, cond: fmt.Sprintf("%s = %d", partitionExpr(n), p)}
}

type partition struct {
	*Store
	cond string
}

func (p *partition) Claim(ctx context.Context, cp outbox.ClaimParams) ([]outbox.Record, error) {
	return p.DB.ClaimWhere(ctx, p.cond, cp)
}

// SetPartitions splits the outbox into n partitions (1: not split). It
// fails with outbox.ErrRelaysRunning, changing nothing, while a relay holds
// a partition lease or the whole-outbox leadership lock: stop the relays,
// change the count, start them again (see docs/design.md). The table must
// be migrated (migration 003).
func (s *Store) SetPartitions(ctx context.Context, n int) error {
	lock, err := s.TryLock(ctx)
	if err != nil {
		return err
	}
	if lock == nil {
		return fmt.Errorf("outbox/mysqloutbox: %w (a relay holds the leadership lock of %s)", outbox.ErrRelaysRunning, s.Table())
	}
	defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()
	return s.leases().SetPartitions(ctx, n, nil)
}
