// Package audit reconciles what an outbox wrote with what the broker holds
// and what consumer groups applied. Guarantee: Run reports every position of
// a subject's sequence (the eventkit.SubjectSeqExtension numbers the SQL
// outboxes stamp, gap-free per topic and subject) that the outbox wrote and
// that is neither waiting nor parked in the outbox nor stored at the broker
// (missing at the broker); every event stored at the broker that none of the
// named groups' inbox tables recorded (applied by no group); every event a
// group recorded more than once, by row or under two ids of one position
// (applied twice); and every subject whose positions the broker stores in
// another order than their numbers (out of order). It reads and never writes.
//
// Use: give Run the database, its outbox and inbox tables, the broker's
// Stream (ForBroker) and the topic and groups; Report.OK says whether there
// was any finding; `eventkit audit` runs it. TraceEvent follows one event
// along the same path (the console's trace page). How "what the outbox
// wrote" is known from the outbox's subject counter table: docs/design.md,
// section "Package audit".
//
// Limits: without Since, the broker is expected to hold the topic's whole
// history; with a stream whose limits (MaxAge, MaxMsgs) dropped old
// messages, give Since, and the audit checks each subject from the first
// position it finds in the window. With Until, positions after the last one
// found in the window are not checked. Positions above the outbox's counter
// (written by a later transaction than the counter read) are not checked.
// Events without a subject have no number: they are checked from the broker
// and the inbox only. Brokers: NATS JetStream, Redis Streams and the memory
// broker (see ForBroker).
package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/outbox"
)

// Kind is the kind of a Finding.
type Kind string

// The kinds of findings.
const (
	MissingAtBroker Kind = "missing_at_broker"
	NotApplied      Kind = "not_applied"
	AppliedTwice    Kind = "applied_twice"
	OutOfOrder      Kind = "out_of_order"
)

// ErrConfig is wrapped by errors about a Config.
var ErrConfig = errors.New("audit: bad configuration")

// Config says what to audit. DB is the database that holds the outbox and
// the inbox tables (and the dead-letter table, if any).
type Config struct {
	DB      *sql.DB
	Dialect sqlinbox.Dialect
	// OutboxTable, InboxTable and DeadLetterTable default to
	// outbox.DefaultTable, sqlinbox.DefaultTable and
	// sqldeadletter.DefaultTable. A missing dead-letter table is not an
	// error (no dead letters are shown).
	OutboxTable, InboxTable, DeadLetterTable string
	// Stream reads the broker.
	Stream Stream
	// Topic is the topic to audit.
	Topic string
	// Groups are the consumer groups whose inbox rows count as applied.
	// With none, only the outbox and the broker are compared.
	Groups []string
	// Since and Until bound the audit to events stored at the broker (and
	// written to the outbox) in [Since, Until). Zero: unbounded.
	Since, Until time.Time
}

func (c *Config) defaults() error {
	if c.DB == nil || c.Stream == nil {
		return fmt.Errorf("%w: DB and Stream are required", ErrConfig)
	}
	if c.Topic == "" {
		return fmt.Errorf("%w: no topic", ErrConfig)
	}
	if c.OutboxTable == "" {
		c.OutboxTable = outbox.DefaultTable
	}
	if c.InboxTable == "" {
		c.InboxTable = sqlinbox.DefaultTable
	}
	for _, t := range []string{c.OutboxTable, c.InboxTable} {
		if err := sqlinbox.CheckTable(t); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if !c.Since.IsZero() && !c.Until.IsZero() && !c.Since.Before(c.Until) {
		return fmt.Errorf("%w: since %s is not before until %s", ErrConfig, c.Since.Format(time.RFC3339), c.Until.Format(time.RFC3339))
	}
	return nil
}

// Finding is one thing the audit found wrong.
type Finding struct {
	Kind    Kind   `json:"kind"`
	Topic   string `json:"topic"`
	Subject string `json:"subject"`
	// Seq is the event's position in its subject (0 for events without
	// a subject).
	Seq     int64  `json:"seq,omitempty"`
	EventID string `json:"event_id,omitempty"`
	Group   string `json:"group,omitempty"`
	Detail  string `json:"detail"`
}

// SubjectSummary counts one subject's events.
type SubjectSummary struct {
	Subject string `json:"subject"`
	// Written is the outbox's counter (the last position written).
	Written  int64 `json:"written"`
	AtBroker int   `json:"at_broker"`
	Findings int   `json:"findings"`
}

// Report is the result of Run.
type Report struct {
	Topic  string    `json:"topic"`
	Broker string    `json:"broker"`
	Groups []string  `json:"groups"`
	Since  time.Time `json:"since,omitzero"`
	Until  time.Time `json:"until,omitzero"`
	// AtBroker counts the distinct events stored at the broker (in the
	// window); Republished the extra copies of them (a relay's retry
	// outside the broker's duplicate window, or a dead letter's replay).
	AtBroker    int `json:"at_broker"`
	Republished int `json:"republished"`
	// Pending and Parked count the topic's events still in the outbox.
	Pending int `json:"pending"`
	Parked  int `json:"parked"`
	// Subjects summarises the subjects with findings, by name.
	Subjects []SubjectSummary `json:"subjects"`
	Findings []Finding        `json:"findings"`
	// Notes say what could not be checked.
	Notes []string `json:"notes,omitempty"`
}

// OK reports whether the audit found nothing.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

type pos struct {
	subject string
	seq     int64
}

// brokerEvent is an event as the audit collects it from the broker.
type brokerEvent struct {
	id      string
	subject string
	seq     int64
	first   Message
	copies  int
}

// Run audits cfg.Topic. It returns an error wrapping ErrNoTopic when the
// broker has no such topic, and other errors when a store cannot be read;
// findings are in the Report, not errors.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	d := db{cfg.DB, cfg.Dialect}
	rep := &Report{Topic: cfg.Topic, Broker: cfg.Stream.Name(), Groups: append([]string{}, cfg.Groups...), Since: cfg.Since, Until: cfg.Until,
		Subjects: []SubjectSummary{}, Findings: []Finding{}}

	rows, err := d.outboxRows(ctx, cfg.OutboxTable, rowFilter{topic: cfg.Topic, since: cfg.Since, until: cfg.Until})
	if err != nil {
		return nil, err
	}
	written, err := d.subjectSeqs(ctx, cfg.OutboxTable, cfg.Topic)
	if err != nil {
		return nil, err
	}

	// The broker's events, first copies in stream order.
	var order []*brokerEvent
	byID := map[string]*brokerEvent{}
	err = cfg.Stream.Read(ctx, cfg.Topic, cfg.Since, func(m Message) error {
		if !cfg.Until.IsZero() && !m.Time.IsZero() && !m.Time.Before(cfg.Until) {
			return nil
		}
		if m.DecodeErr != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("message %d at the broker is not an event: %v", m.Pos, m.DecodeErr))
			return nil
		}
		id := m.Event.ID
		if orig, ok := m.Event.Extensions[deadletter.ExtReplayOf]; ok {
			id = orig
		}
		if be := byID[id]; be != nil {
			be.copies++
			rep.Republished++
			return nil
		}
		be := &brokerEvent{id: id, subject: m.Event.Subject, first: m}
		if n, ok, err := eventkit.SubjectSeq(m.Event); ok && err == nil {
			be.seq = n
		}
		byID[id] = be
		order = append(order, be)
		return nil
	})
	if errors.Is(err, ErrNoTopic) {
		if len(rows) > 0 || len(written) > 0 {
			return nil, fmt.Errorf("%w; the outbox holds %d events of it (%d subjects written): nothing of the topic reached the broker", err, len(rows), len(written))
		}
		return nil, fmt.Errorf("%w, and the outbox %s has no events of it: check the topic's name", err, cfg.OutboxTable)
	}
	if err != nil {
		return nil, err
	}
	rep.AtBroker = len(order)

	summaries := map[string]*SubjectSummary{}
	sum := func(subject string) *SubjectSummary {
		s := summaries[subject]
		if s == nil {
			s = &SubjectSummary{Subject: subject, Written: written[subject]}
			summaries[subject] = s
		}
		return s
	}
	add := func(f Finding) {
		f.Topic = cfg.Topic
		rep.Findings = append(rep.Findings, f)
		sum(f.Subject).Findings++
	}

	// Positions at the broker, and order per subject.
	atBroker := map[pos]*brokerEvent{}
	lastSeq := map[string]int64{}
	lo, hi := map[string]int64{}, map[string]int64{}
	seen := func(subject string, seq int64) {
		if l, ok := lo[subject]; !ok || seq < l {
			lo[subject] = seq
		}
		if seq > hi[subject] {
			hi[subject] = seq
		}
	}
	for _, be := range order {
		if be.subject == "" || be.seq == 0 {
			continue
		}
		sum(be.subject).AtBroker++
		p := pos{be.subject, be.seq}
		if other := atBroker[p]; other != nil {
			add(Finding{Kind: AppliedTwice, Subject: be.subject, Seq: be.seq, EventID: be.id,
				Detail: fmt.Sprintf("two events hold position %d of the subject at the broker: %s (message %d) and %s (message %d)", be.seq, other.id, other.first.Pos, be.id, be.first.Pos)})
		} else {
			atBroker[p] = be
		}
		seen(be.subject, be.seq)
		if last := lastSeq[be.subject]; be.seq < last {
			add(Finding{Kind: OutOfOrder, Subject: be.subject, Seq: be.seq, EventID: be.id,
				Detail: fmt.Sprintf("position %d is stored at the broker (message %d) after position %d", be.seq, be.first.Pos, last)})
		} else {
			lastSeq[be.subject] = be.seq
		}
	}

	// Outbox rows: what is still waiting, and positions the broker lacks.
	inOutbox := map[pos]outboxRow{}
	for _, r := range rows {
		switch r.State {
		case StatePending:
			rep.Pending++
		case StateParked:
			rep.Parked++
		}
		if r.SubjSeq > 0 {
			inOutbox[pos{r.Event.Subject, r.SubjSeq}] = r
			seen(r.Event.Subject, r.SubjSeq)
		} else if r.State == StateDelivered && byID[r.Event.ID] == nil {
			add(Finding{Kind: MissingAtBroker, Subject: r.Event.Subject, EventID: r.Event.ID,
				Detail: fmt.Sprintf("the outbox marked it delivered at %s; the broker does not hold it", r.At.Format(time.RFC3339))})
		}
	}
	subjects := make([]string, 0, len(written))
	for s := range written {
		subjects = append(subjects, s)
	}
	sort.Strings(subjects)
	for _, s := range subjects {
		from, to := int64(1), written[s]
		if !cfg.Since.IsZero() {
			l, ok := lo[s]
			if !ok {
				continue // nothing of the subject in the window
			}
			from = l
		}
		if !cfg.Until.IsZero() {
			to = min(to, hi[s])
		}
		for n := from; n <= to; n++ {
			p := pos{s, n}
			if atBroker[p] != nil {
				continue
			}
			r, ok := inOutbox[p]
			switch {
			case ok && r.State != StateDelivered:
				continue // still waiting, or parked: not published yet
			case ok:
				add(Finding{Kind: MissingAtBroker, Subject: s, Seq: n, EventID: r.Event.ID,
					Detail: fmt.Sprintf("the outbox marked it delivered at %s; the broker does not hold it", r.At.Format(time.RFC3339))})
			default:
				add(Finding{Kind: MissingAtBroker, Subject: s, Seq: n,
					Detail: fmt.Sprintf("the outbox wrote positions 1..%d of the subject; position %d is neither in the outbox nor at the broker", written[s], n)})
			}
		}
	}

	// Inbox rows of each group.
	if len(cfg.Groups) == 0 {
		rep.Notes = append(rep.Notes, "no groups named: applied-by-no-group and applied-twice were not checked")
	} else {
		ids := make([]string, 0, len(order))
		for _, be := range order {
			ids = append(ids, be.id)
		}
		dead := deadLetters(ctx, cfg, rep)
		appliedBy := map[string][]string{}
		for _, g := range cfg.Groups {
			in, err := d.inboxRows(ctx, cfg.InboxTable, g, ids)
			if err != nil {
				return nil, err
			}
			byPos := map[pos]string{}
			for _, be := range order {
				a, ok := in[be.id]
				if !ok {
					continue
				}
				appliedBy[be.id] = append(appliedBy[be.id], g)
				if a.Rows > 1 {
					add(Finding{Kind: AppliedTwice, Subject: be.subject, Seq: be.seq, EventID: be.id, Group: g,
						Detail: fmt.Sprintf("group %s's inbox holds %d rows for the event", g, a.Rows)})
				}
				if be.seq > 0 {
					p := pos{be.subject, be.seq}
					if other, ok := byPos[p]; ok {
						add(Finding{Kind: AppliedTwice, Subject: be.subject, Seq: be.seq, EventID: be.id, Group: g,
							Detail: fmt.Sprintf("group %s applied position %d of the subject twice, as %s and as %s", g, be.seq, other, be.id)})
					}
					byPos[p] = be.id
				}
			}
		}
		for _, be := range order {
			if len(appliedBy[be.id]) > 0 {
				continue
			}
			detail := fmt.Sprintf("stored at the broker (message %d", be.first.Pos)
			if !be.first.Time.IsZero() {
				detail += ", " + be.first.Time.Format(time.RFC3339)
			}
			detail += ") and recorded by none of the groups' inboxes"
			for _, e := range dead[be.id] {
				detail += fmt.Sprintf("; dead-lettered by %s (%s)", e.Group, e.Reason)
			}
			add(Finding{Kind: NotApplied, Subject: be.subject, Seq: be.seq, EventID: be.id, Detail: detail})
		}
	}

	for _, s := range summaries {
		if s.Findings > 0 {
			rep.Subjects = append(rep.Subjects, *s)
		}
	}
	sort.Slice(rep.Subjects, func(i, j int) bool { return rep.Subjects[i].Subject < rep.Subjects[j].Subject })
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		a, b := rep.Findings[i], rep.Findings[j]
		if a.Subject != b.Subject {
			return a.Subject < b.Subject
		}
		return a.Seq < b.Seq
	})
	return rep, nil
}

// deadLetters returns the topic's dead letters by event id; a missing
// table gives none and a note.
func deadLetters(ctx context.Context, cfg Config, rep *Report) map[string][]sqldeadletter.Entry {
	out := map[string][]sqldeadletter.Entry{}
	st, err := sqldeadletter.New(cfg.DB, cfg.Dialect, cfg.DeadLetterTable)
	if err != nil {
		rep.Notes = append(rep.Notes, err.Error())
		return out
	}
	entries, err := st.List(ctx, sqldeadletter.Filter{Topic: cfg.Topic})
	if err != nil {
		rep.Notes = append(rep.Notes, "dead letters not read: "+err.Error())
		return out
	}
	for _, e := range entries {
		out[e.EventID] = append(out[e.EventID], e)
	}
	return out
}
