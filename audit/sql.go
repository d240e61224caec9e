package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// outboxRow is an outbox row as the audit reads it.
type outboxRow struct {
	Seq      int64
	Topic    string
	Event    eventkit.Event
	SubjSeq  int64
	Created  time.Time
	State    string // StatePending, StateParked, StateDelivered
	Attempts int
	Reason   string
	At       time.Time // parked or delivered at
}

// The states of an outbox row.
const (
	StatePending   = "pending"
	StateParked    = "parked"
	StateDelivered = "delivered"
)

type db struct {
	sql     *sql.DB
	dialect sqlinbox.Dialect
}

// q rewrites '?' placeholders for the dialect.
func (d db) q(query string) string { return d.dialect.Rebind(query) }

// micros is the SQL expression for a time column as unix microseconds (the
// MySQL and SQLite outboxes store them so already).
func (d db) micros(col string) string {
	if d.dialect == sqlinbox.Postgres {
		return "(extract(epoch FROM " + col + ") * 1000000)::bigint"
	}
	return col
}

// rowFilter selects outbox rows; zero fields match all.
type rowFilter struct {
	topic, id, subject string
	since, until       time.Time
}

// outboxRows reads the rows f selects, in seq order.
func (d db) outboxRows(ctx context.Context, table string, f rowFilter) ([]outboxRow, error) {
	topic, id, since, until := f.topic, f.id, f.since, f.until
	ext := "extensions"
	if d.dialect == sqlinbox.Postgres {
		ext = "extensions::text"
	}
	q := `SELECT seq, topic, id, type, source, subject, event_time, data_content_type, data_schema, ` + ext + `, data, ` +
		d.micros("created_at") + `, attempts, coalesce(last_error, ''), ` + d.micros("delivered_at") + `, ` + d.micros("parked_at") +
		` FROM ` + table + ` WHERE 1=1`
	var args []any
	if topic != "" {
		q += ` AND topic = ?`
		args = append(args, topic)
	}
	if id != "" {
		q += ` AND id = ?`
		args = append(args, id)
	}
	if f.subject != "" {
		q += ` AND subject = ?`
		args = append(args, f.subject)
	}
	if !since.IsZero() {
		q += ` AND created_at >= ?`
		args = append(args, d.timeArg(since))
	}
	if !until.IsZero() {
		q += ` AND created_at < ?`
		args = append(args, d.timeArg(until))
	}
	q += ` ORDER BY seq`
	rows, err := d.sql.QueryContext(ctx, d.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read outbox %s: %w", table, err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var tm string
		var exts sql.NullString
		var created int64
		var delivered, parked sql.NullInt64
		e := &r.Event
		if err := rows.Scan(&r.Seq, &r.Topic, &e.ID, &e.Type, &e.Source, &e.Subject, &tm, &e.DataContentType, &e.DataSchema,
			&exts, &e.Data, &created, &r.Attempts, &r.Reason, &delivered, &parked); err != nil {
			return nil, fmt.Errorf("audit: read outbox %s: %w", table, err)
		}
		e.Time, _ = time.Parse(time.RFC3339Nano, tm)
		if exts.Valid && exts.String != "" {
			_ = json.Unmarshal([]byte(exts.String), &e.Extensions)
		}
		if n, ok, err := eventkit.SubjectSeq(*e); ok && err == nil {
			r.SubjSeq = n
		}
		r.Created = time.UnixMicro(created).UTC()
		switch {
		case parked.Valid:
			r.State, r.At = StateParked, time.UnixMicro(parked.Int64).UTC()
		case delivered.Valid:
			r.State, r.At = StateDelivered, time.UnixMicro(delivered.Int64).UTC()
		default:
			r.State = StatePending
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (d db) timeArg(t time.Time) any {
	if d.dialect == sqlinbox.Postgres {
		return t
	}
	return t.UnixMicro()
}

// subjectSeqs reads the outbox's subject counters of topic: the number of
// the last event written per subject.
func (d db) subjectSeqs(ctx context.Context, outboxTable, topic string) (map[string]int64, error) {
	rows, err := d.sql.QueryContext(ctx, d.q(`SELECT subject, seq FROM `+outboxTable+`_subject_seq WHERE topic = ?`), topic)
	if err != nil {
		return nil, fmt.Errorf("audit: read subject sequences %s_subject_seq: %w", outboxTable, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// applied is what a group's inbox holds for one event id.
type applied struct {
	Rows int
	At   time.Time
}

// inboxRows reads the inbox rows of group for ids.
func (d db) inboxRows(ctx context.Context, table, group string, ids []string) (map[string]applied, error) {
	out := map[string]applied{}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := ids[:n]
		ids = ids[n:]
		args := []any{group}
		for _, id := range chunk {
			args = append(args, id)
		}
		q := `SELECT event_id, processed_at FROM ` + table + ` WHERE consumer = ? AND event_id IN (?` + strings.Repeat(", ?", len(chunk)-1) + `)`
		rows, err := d.sql.QueryContext(ctx, d.q(q), args...)
		if err != nil {
			return nil, fmt.Errorf("audit: read inbox %s: %w", table, err)
		}
		for rows.Next() {
			var id string
			var at any
			if err := rows.Scan(&id, &at); err != nil {
				rows.Close()
				return nil, fmt.Errorf("audit: read inbox %s: %w", table, err)
			}
			a := out[id]
			a.Rows++
			if t := anyTime(at); a.At.IsZero() || t.Before(a.At) {
				a.At = t
			}
			out[id] = a
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("audit: read inbox %s: %w", table, err)
		}
	}
	return out, nil
}

// inboxGroups lists the groups that applied id.
func (d db) inboxGroups(ctx context.Context, table, id string) (map[string]applied, error) {
	rows, err := d.sql.QueryContext(ctx, d.q(`SELECT consumer, processed_at FROM `+table+` WHERE event_id = ?`), id)
	if err != nil {
		return nil, fmt.Errorf("audit: read inbox %s: %w", table, err)
	}
	defer rows.Close()
	out := map[string]applied{}
	for rows.Next() {
		var g string
		var at any
		if err := rows.Scan(&g, &at); err != nil {
			return nil, err
		}
		a := out[g]
		a.Rows++
		a.At = anyTime(at)
		out[g] = a
	}
	return out, rows.Err()
}

// anyTime reads a processed_at value: a time (PostgreSQL, MySQL with
// parseTime) or text (SQLite's fixed-width UTC, MySQL without parseTime).
func anyTime(v any) time.Time {
	switch v := v.(type) {
	case time.Time:
		return v.UTC()
	case []byte:
		return anyTime(string(v))
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.000000000Z"} {
			if t, err := time.Parse(layout, v); err == nil {
				return t.UTC()
			}
		}
	}
	return time.Time{}
}

// Topics lists the topics an outbox wrote (its subject counters and its
// rows).
func Topics(ctx context.Context, c Config) ([]string, error) {
	c.Topic, c.Stream = "-", memStream{}
	if err := c.defaults(); err != nil {
		return nil, err
	}
	d := db{c.DB, c.Dialect}
	rows, err := d.sql.QueryContext(ctx, `SELECT topic FROM `+c.OutboxTable+`_subject_seq UNION SELECT topic FROM `+c.OutboxTable)
	if err != nil {
		return nil, fmt.Errorf("audit: topics of outbox %s: %w", c.OutboxTable, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
