package pgcdc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/eventkit/eventkit/outbox"
)

var (
	// ErrSlotNotFound is returned by Run (and reported by Status) when the
	// replication slot does not exist: call Setup first.
	ErrSlotNotFound = errors.New("pgcdc: replication slot not found")
	// ErrMismatch is returned by Setup and Run (at start, without
	// retrying) when a slot or publication of the configured name exists but
	// is not what the relay needs (another plugin, another database, a
	// publication without the outbox table or without inserts), and by
	// Teardown for a slot of another database. Setup never alters or drops
	// objects it did not create; Teardown never touches another database's
	// slot.
	ErrMismatch = errors.New("pgcdc: existing slot or publication does not match")
	// ErrPublicationNotFound is returned by Run (at start) when the slot
	// exists but the publication does not: call Setup.
	ErrPublicationNotFound = errors.New("pgcdc: publication not found")
	// ErrInvalidName is returned for a slot or publication name that is not
	// 1-63 lower-case letters, digits and '_'.
	ErrInvalidName = errors.New("pgcdc: invalid slot or publication name")
	// ErrPartitioned is returned by Run (at start, without retrying) when
	// the outbox is split into partitions (postgres.Store.SetPartitions
	// with n > 1): the slot streams the whole table in commit order, so a
	// CDC relay is one partition, and it would publish the rows the
	// partitions' polling relays publish too. Set the partitions back to 1
	// (or run the polling relay) to use CDC.
	ErrPartitioned = errors.New("pgcdc: the outbox is partitioned; the CDC relay relays an outbox of one partition only")
	// ErrNoPublisher is returned by Run when the relay was built without a
	// publisher (which is fine for Setup, Teardown and Status).
	ErrNoPublisher = errors.New("pgcdc: no publisher")
)

// Config configures a Relay. The zero value gives the defaults.
type Config struct {
	// Table is the outbox table, optionally schema-qualified, as given to
	// outbox/pgoutbox. Default outbox.DefaultTable.
	Table string
	// Slot is the logical replication slot. Slot names are cluster-wide, so
	// the default is scoped to the database and the table:
	// DefaultSlotName(current_database(), Table), resolved when the relay
	// first talks to the database. One exception keeps existing setups
	// working: if this database already has a slot of the old default name
	// ("eventkit_" + Table with '.' as '_', which earlier versions used),
	// and none of the new name, that slot is adopted (see the package doc).
	// A name given here is used as is; a slot of that name that belongs to
	// another database is an ErrMismatch, never used or dropped.
	Slot string
	// Publication is the publication on the table (publications belong to
	// a database, so any name is per database). Default: the slot name.
	Publication string

	// RelayConfig configures the relay engine, exactly as for the polling
	// relay (outbox.RelayConfig, same names, meanings and defaults):
	// BatchSize, PublishTimeout, MinBackoff/MaxBackoff, MaxAttempts and
	// RetryDelay for permanent rejections, Retention, CleanupInterval,
	// LockRetryInterval, StatusInterval (backlog metrics), PipelineSubjects,
	// Logger and Metrics (outbox.NewOTelMetrics, or NewOTelMetrics here,
	// which adds the slot lag). PollInterval and WakeLinger are unused: the
	// stream wakes the engine.
	outbox.RelayConfig

	// QueueSize is how many received transactions may wait, in memory,
	// for the engine to publish and complete them; the stream pauses
	// when they are full. Default 256.
	QueueSize int
	// FeedbackInterval is how often the confirmed position is sent to the
	// server (it is also sent whenever the server asks, and within 100ms
	// of a change while events flow). Default 1s.
	FeedbackInterval time.Duration
	// HeartbeatInterval: when no change has arrived for this long, the
	// relay writes a tiny non-transactional logical message
	// (pg_logical_emit_message) so that the server reports its WAL position
	// and an idle slot moves forward. Default 30s; negative disables it.
	HeartbeatInterval time.Duration
	// BackfillInterval is how often the leader looks for requeued rows
	// (parked rows put back with `eventkit outbox requeue` or
	// Store.Requeue: an UPDATE, which the stream does not carry) and
	// publishes them from the table. Rows committed before the slot's
	// position are read from the table whenever a relay becomes the
	// leader. Default 5s.
	BackfillInterval time.Duration
	// LagInterval is how often the slot's lag is measured. Default 10s.
	LagInterval time.Duration
	// LagWarnBytes: when pg_current_wal_lsn() - confirmed_flush_lsn is over
	// this, every lag measurement logs a warning. Default 1 GiB.
	LagWarnBytes int64
}

// LagMetrics is implemented by Metrics that also record the slot's lag.
type LagMetrics interface {
	SlotLag(bytes int64)
}

var slotNameRe = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Table == "" {
		c.Table = outbox.DefaultTable
	}
	if c.Publication == "" {
		c.Publication = c.Slot // "" when the slot's default is still to resolve
	}
	for _, n := range []string{c.Slot, c.Publication} {
		if n != "" && !slotNameRe.MatchString(n) {
			return c, fmt.Errorf("%w: %q (want 1-63 of a-z, 0-9, _)", ErrInvalidName, n)
		}
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	def(&c.FeedbackInterval, time.Second)
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 30 * time.Second
	}
	def(&c.LagInterval, 10*time.Second)
	def(&c.BackfillInterval, 5*time.Second)
	if c.LagWarnBytes <= 0 {
		c.LagWarnBytes = 1 << 30
	}
	// The stream uses these before the engine fills in its own defaults
	// (the same values).
	def(&c.MinBackoff, 100*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return c, nil
}

// DefaultSlotName is the slot name a relay uses for table on database when
// Config.Slot is empty: "eventkit_", then the database and table names
// (lower-cased, every character other than a-z, 0-9 and '_' replaced by
// '_', shortened to 41 characters together), then '_' and 12 hex digits of
// the SHA-256 of the exact database name and the lower-cased table name.
// The hash makes the name differ for every database and table, also when
// the readable part is shortened or replaces characters; the result is
// always a valid slot name of at most 63 characters. Example: database
// "shop", table "eventkit_outbox" gives
// "eventkit_shop_eventkit_outbox_" + 12 hex digits.
func DefaultSlotName(database, table string) string {
	table = strings.ToLower(table) // unquoted identifiers fold to lower case
	sum := sha256.Sum256([]byte(database + "\x00" + table))
	readable := []byte(strings.ToLower(database) + "_" + table)
	for i, b := range readable {
		if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' {
			readable[i] = '_'
		}
	}
	const maxReadable = 63 - len("eventkit_") - 1 - 12
	if len(readable) > maxReadable {
		readable = readable[:maxReadable]
	}
	return "eventkit_" + string(readable) + "_" + hex.EncodeToString(sum[:6])
}

// legacySlotName is the default slot name before names were scoped to the
// database: "eventkit_" + table, which collides across databases.
func legacySlotName(table string) string {
	n := "eventkit_" + strings.ToLower(strings.ReplaceAll(table, ".", "_"))
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

type nopMetrics struct{}

func (nopMetrics) Delivered(int)                              {}
func (nopMetrics) PublishLatency(string, time.Duration, bool) {}
func (nopMetrics) Error(string)                               {}
func (nopMetrics) Parked(string, int)                         {}
func (nopMetrics) Backlog(int64, time.Duration, int64)        {}
