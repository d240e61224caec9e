package pgcdc

import (
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
	// ErrMismatch is returned by Setup when a slot or publication of the
	// configured name exists but is not what the relay needs (another plugin,
	// another database, a publication without the outbox table or without
	// inserts). Setup never alters or drops objects it did not create.
	ErrMismatch = errors.New("pgcdc: existing slot or publication does not match")
	// ErrInvalidName is returned for a slot or publication name that is not
	// 1-63 lower-case letters, digits and '_'.
	ErrInvalidName = errors.New("pgcdc: invalid slot or publication name")
	// ErrNoPublisher is returned by Run when the relay was built without a
	// publisher (which is fine for Setup, Teardown and Status).
	ErrNoPublisher = errors.New("pgcdc: no publisher")
)

// Config configures a Relay. The zero value gives the defaults.
type Config struct {
	// Table is the outbox table, optionally schema-qualified, as given to
	// outbox/postgres. Default outbox.DefaultTable.
	Table string
	// Slot is the logical replication slot. Default "eventkit_" + the table
	// name with '.' replaced by '_', lower-cased.
	Slot string
	// Publication is the publication on the table. Default: the slot name.
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
	if c.Slot == "" {
		c.Slot = "eventkit_" + strings.ToLower(strings.ReplaceAll(c.Table, ".", "_"))
		if len(c.Slot) > 63 {
			c.Slot = c.Slot[:63]
		}
	}
	if c.Publication == "" {
		c.Publication = c.Slot
	}
	for _, n := range []string{c.Slot, c.Publication} {
		if !slotNameRe.MatchString(n) {
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

type nopMetrics struct{}

func (nopMetrics) Delivered(int)                              {}
func (nopMetrics) PublishLatency(string, time.Duration, bool) {}
func (nopMetrics) Error(string)                               {}
func (nopMetrics) Parked(string, int)                         {}
func (nopMetrics) Backlog(int64, time.Duration, int64)        {}
