package sqlutil

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/eventkit/eventkit/internal/sqldialect"
	"github.com/eventkit/eventkit/outbox"
)

// Conn is what Leases needs of a connection pool or transaction.
type Conn = sqldialect.Conn

// LeaseDialect is what differs between databases for Leases.
type LeaseDialect struct {
	// Name prefixes errors: "outbox/mysqloutbox".
	Name string
	// SQL is the database's dialect (clock, placeholders, upsert).
	SQL sqldialect.Dialect
	// InTx runs fn in a transaction.
	InTx sqldialect.InTx
}

// Leases implements outbox.Leases on the tables <table>_leases (one row per
// partition: part, owner, expires_at in database microseconds) and
// <table>_relays (instance, expires_at), created by the stores' partition
// migration.
type Leases struct {
	C     Conn
	Table string
	D     LeaseDialect
}

var _ outbox.Leases = (*Leases)(nil)

func (l *Leases) q(s string) string {
	s = strings.NewReplacer("{{leases}}", l.Table+"_leases", "{{relays}}", l.Table+"_relays", "NOW", l.D.SQL.NowMicros()).Replace(s)
	return l.D.SQL.Rebind(s)
}

func (l *Leases) errf(op string, err error) error { return fmt.Errorf("%s: %s: %w", l.D.Name, op, err) }

// Partitions returns the partition count: the number of lease rows; 1 if
// the lease table does not exist (the partition migration is not applied)
// or is empty.
func (l *Leases) Partitions(ctx context.Context) (int, error) {
	var n int
	err := l.C.Query(ctx, l.q(`SELECT count(*) FROM {{leases}}`), nil, func(scan func(...any) error) error { return scan(&n) })
	if err != nil {
		if errors.Is(ClassifyTableError(err), outbox.ErrNoTable) {
			return 1, nil
		}
		return 0, l.errf("partitions", err)
	}
	return max(n, 1), nil
}

// Join implements outbox.Leases.
func (l *Leases) Join(ctx context.Context, instance string, ttl time.Duration) (int, error) {
	if _, err := l.C.Exec(ctx, l.q(`INSERT INTO {{relays}} (instance, expires_at) VALUES (?, NOW + ?)`+l.D.SQL.OnConflict([]string{"instance"}, "expires_at = "+l.D.SQL.Excluded("expires_at"))), instance, ttl.Microseconds()); err != nil {
		return 0, l.errf("join", err)
	}
	// Forget relays dead for an hour.
	if _, err := l.C.Exec(ctx, l.q(`DELETE FROM {{relays}} WHERE expires_at < NOW - 3600000000`)); err != nil {
		return 0, l.errf("join", err)
	}
	var n int
	err := l.C.Query(ctx, l.q(`SELECT count(*) FROM {{relays}} WHERE expires_at > NOW`), nil, func(scan func(...any) error) error { return scan(&n) })
	if err != nil {
		return 0, l.errf("join", err)
	}
	return n, nil
}

// Acquire implements outbox.Leases.
func (l *Leases) Acquire(ctx context.Context, instance string, p int, ttl time.Duration) (bool, error) {
	n, err := l.C.Exec(ctx, l.q(`UPDATE {{leases}} SET owner = ?, expires_at = NOW + ?
WHERE part = ? AND (owner = '' OR owner = ? OR expires_at < NOW)`), instance, ttl.Microseconds(), p, instance)
	if err != nil {
		return false, l.errf("acquire lease", err)
	}
	return n == 1, nil
}

// Renew implements outbox.Leases.
func (l *Leases) Renew(ctx context.Context, instance string, ttl time.Duration) ([]int, error) {
	if _, err := l.C.Exec(ctx, l.q(`UPDATE {{leases}} SET expires_at = NOW + ? WHERE owner = ?`), ttl.Microseconds(), instance); err != nil {
		return nil, l.errf("renew leases", err)
	}
	var ps []int
	err := l.C.Query(ctx, l.q(`SELECT part FROM {{leases}} WHERE owner = ? ORDER BY part`), []any{instance}, func(scan func(...any) error) error {
		var p int
		if err := scan(&p); err != nil {
			return err
		}
		ps = append(ps, p)
		return nil
	})
	if err != nil {
		return nil, l.errf("renew leases", err)
	}
	return ps, nil
}

// Release implements outbox.Leases.
func (l *Leases) Release(ctx context.Context, instance string, p int) error {
	if _, err := l.C.Exec(ctx, l.q(`UPDATE {{leases}} SET owner = '', expires_at = 0 WHERE part = ? AND owner = ?`), p, instance); err != nil {
		return l.errf("release lease", err)
	}
	return nil
}

// Leave implements outbox.Leases.
func (l *Leases) Leave(ctx context.Context, instance string) error {
	if _, err := l.C.Exec(ctx, l.q(`UPDATE {{leases}} SET owner = '', expires_at = 0 WHERE owner = ?`), instance); err != nil {
		return l.errf("leave", err)
	}
	if _, err := l.C.Exec(ctx, l.q(`DELETE FROM {{relays}} WHERE instance = ?`), instance); err != nil {
		return l.errf("leave", err)
	}
	return nil
}

// List implements outbox.Leases.
func (l *Leases) List(ctx context.Context) (outbox.LeaseStatus, error) {
	var st outbox.LeaseStatus
	err := l.C.Query(ctx, l.q(`SELECT part, owner, expires_at - NOW FROM {{leases}} ORDER BY part`), nil, func(scan func(...any) error) error {
		var le outbox.Lease
		var left int64
		if err := scan(&le.Partition, &le.Owner, &left); err != nil {
			return err
		}
		le.ExpiresIn = time.Duration(left) * time.Microsecond
		st.Leases = append(st.Leases, le)
		return nil
	})
	if err != nil {
		if errors.Is(ClassifyTableError(err), outbox.ErrNoTable) {
			return outbox.LeaseStatus{Partitions: 1}, nil
		}
		return st, l.errf("leases", err)
	}
	st.Partitions = max(len(st.Leases), 1)
	err = l.C.Query(ctx, l.q(`SELECT instance FROM {{relays}} WHERE expires_at > NOW ORDER BY instance`), nil, func(scan func(...any) error) error {
		var s string
		if err := scan(&s); err != nil {
			return err
		}
		st.Instances = append(st.Instances, s)
		return nil
	})
	if err != nil {
		return st, l.errf("leases", err)
	}
	return st, nil
}

// SetPartitions sets the partition count to n (1 to 4096): one lease row per
// partition, all free. It fails with outbox.ErrRelaysRunning, changing
// nothing, if any lease is held and not expired. extra, if set, runs in the
// same transaction with the old count (e.g. to create the partition
// index).
func (l *Leases) SetPartitions(ctx context.Context, n int, extra func(c Conn, old int) error) error {
	if n < 1 || n > 4096 {
		return fmt.Errorf("%s: partitions: %d is not between 1 and 4096", l.D.Name, n)
	}
	return l.D.InTx(ctx, func(c Conn) error {
		var held []string
		old := 0
		err := c.Query(ctx, l.q(`SELECT part, owner, expires_at - NOW FROM {{leases}} ORDER BY part FOR UPDATE`), nil, func(scan func(...any) error) error {
			var p int
			var owner string
			var left int64
			if err := scan(&p, &owner, &left); err != nil {
				return err
			}
			old++
			if owner != "" && left > 0 {
				held = append(held, fmt.Sprintf("%d by %s", p, owner))
			}
			return nil
		})
		if err != nil {
			return l.errf("partitions", err)
		}
		if len(held) > 0 {
			return fmt.Errorf("%s: %w (held: %s)", l.D.Name, outbox.ErrRelaysRunning, strings.Join(held, ", "))
		}
		if _, err := c.Exec(ctx, l.q(`DELETE FROM {{leases}} WHERE part >= ?`), n); err != nil {
			return l.errf("partitions", err)
		}
		if _, err := c.Exec(ctx, l.q(`UPDATE {{leases}} SET owner = '', expires_at = 0`)); err != nil {
			return l.errf("partitions", err)
		}
		for p := old; p < n; p++ {
			if _, err := c.Exec(ctx, l.q(`INSERT INTO {{leases}} (part, owner, expires_at) VALUES (?, '', 0)`), p); err != nil {
				return l.errf("partitions", err)
			}
		}
		if extra != nil {
			return extra(c, max(old, 1))
		}
		return nil
	})
}

// PartitionOf returns the partition of subject among n: the first 28 bits
// of the MD5 of the subject, modulo n. The stores compute the same in SQL
// (PartitionSQL), so the database and Go agree.
func PartitionOf(subject string, n int) int {
	if n <= 1 {
		return 0
	}
	sum := md5.Sum([]byte(subject))
	v, _ := strconv.ParseUint(hex.EncodeToString(sum[:4])[:7], 16, 32)
	return int(v % uint64(n))
}
