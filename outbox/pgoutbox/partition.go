package pgoutbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/internal/sqlutil"
)

var _ outbox.Partitioned = (*Store)(nil)

// partitionExpr is the partition of a row's subject among n: the first 28
// bits of md5(subject), modulo n (the same as outbox/mysqloutbox's, and as
// PartitionOf). It is immutable, so the partition index can be built on it.
func partitionExpr(n int) string {
	return fmt.Sprintf("((('x' || substr(md5(subject), 1, 7))::bit(28)::int) %% %d)", n)
}

// PartitionOf returns the partition of subject on an outbox of n
// partitions (what the database computes).
func PartitionOf(subject string, n int) int { return sqlutil.PartitionOf(subject, n) }

// Partitions implements outbox.Partitioned: the partition count set by
// SetPartitions (1 before it, or before migration 003).
func (s *Store) Partitions(ctx context.Context) (int, error) {
	return s.leases().Partitions(ctx)
}

// Leases implements outbox.Partitioned with the <table>_leases and
// <table>_relays tables (database clock).
func (s *Store) Leases() outbox.Leases { return s.leases() }

func (s *Store) leases() *sqlutil.Leases {
	return &sqlutil.Leases{C: sqldialect.PgxConn{Q: s.pool}, Table: s.table, D: sqlutil.LeaseDialect{
		Name: "outbox/pgoutbox", SQL: sqldialect.Postgres, InTx: sqldialect.PgxInTx(s.pool),
	}}
}

// Partition implements outbox.Partitioned: a Source whose Claim returns the
// records of partition p of n only.
func (s *Store) Partition(p, n int) outbox.Source {
	q := s.q
	cond := `WHERE delivered_at IS NULL AND parked_at IS NULL`
	with := fmt.Sprintf("%s AND %s = %d", cond, partitionExpr(n), p)
	for _, x := range []*string{&q.claim, &q.claimAfter, &q.claimEx, &q.delRun, &q.deliverRun} {
		*x = strings.ReplaceAll(*x, cond, with)
	}
	return &partition{Store: s, q: q}
}

type partition struct {
	*Store
	q queries
}

func (p *partition) Claim(ctx context.Context, cp outbox.ClaimParams) ([]outbox.Record, error) {
	return p.Store.claim(ctx, &p.q, cp)
}

// CompleteRun implements outbox.RunCompleter; the check looks at this
// partition's rows only.
func (p *partition) CompleteRun(ctx context.Context, first, last int64, keep bool, before int64) (int64, bool, error) {
	return p.Store.completeRun(ctx, &p.q, first, last, keep, before)
}

// SetPartitions splits the outbox into n partitions (1: not split) and
// builds the index the partitions' claims use. It fails with
// outbox.ErrRelaysRunning, changing nothing, while a relay holds a
// partition lease or the whole-outbox leadership lock: stop the relays,
// change the count, start them again (see docs/design.md). The table must
// be migrated (migration 003).
func (s *Store) SetPartitions(ctx context.Context, n int) error {
	lock, err := s.TryLock(ctx)
	if err != nil {
		return err
	}
	if lock == nil {
		return fmt.Errorf("outbox/pgoutbox: %w (a relay holds the leadership lock of %s)", outbox.ErrRelaysRunning, s.table)
	}
	defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()
	base := sqlutil.Base(s.table)
	return s.leases().SetPartitions(ctx, n, func(c sqlutil.Conn, old int) error {
		if old > 1 && old != n {
			if _, err := c.Exec(ctx, fmt.Sprintf(`DROP INDEX IF EXISTS %s%s_part%d`, strings.TrimSuffix(s.table, base), base, old)); err != nil {
				return fmt.Errorf("outbox/pgoutbox: partitions: %w", err)
			}
		}
		if n > 1 {
			if _, err := c.Exec(ctx, fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s_part%d ON %s (%s, seq) WHERE delivered_at IS NULL AND parked_at IS NULL`,
				base, n, s.table, partitionExpr(n))); err != nil {
				return fmt.Errorf("outbox/pgoutbox: partitions: %w", err)
			}
		}
		return nil
	})
}
