package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
)

// ErrBadQuery is wrapped by Trace's error for a query that cannot be an
// event id or a subject.
var ErrBadQuery = errors.New("audit: not an event id or subject")

// TraceConfig says where Trace looks. Topics are the topics whose broker
// streams are searched besides those the outbox and the dead letters name
// for the event.
type TraceConfig struct {
	Config
	Topics []string
}

// OutboxEntry is an event's row in the outbox.
type OutboxEntry struct {
	Seq      int64  `json:"seq"`
	Topic    string `json:"topic"`
	State    string `json:"state"` // pending, parked, delivered (retention mode)
	Attempts int    `json:"attempts"`
	// Reason is the last publish error (the park reason when parked).
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
	// At is when it was parked or delivered.
	At time.Time `json:"at,omitzero"`
}

// BrokerEntry is a message of the event at the broker.
type BrokerEntry struct {
	Topic string    `json:"topic"`
	Pos   uint64    `json:"pos"`
	Time  time.Time `json:"time,omitzero"`
	// ReplayFor is set on a dead letter's replay: the group it is for.
	ReplayFor string `json:"replay_for,omitempty"`
	MessageID string `json:"message_id"`
}

// Applied is an inbox row of the event.
type Applied struct {
	Group string    `json:"group"`
	At    time.Time `json:"at"`
	Rows  int       `json:"rows"`
}

// TracedEvent is one event's path.
type TracedEvent struct {
	ID      string `json:"id"`
	Topic   string `json:"topic"`
	Subject string `json:"subject,omitempty"`
	Seq     int64  `json:"seq,omitempty"`
	// Event is the event as best known (outbox row, broker message or
	// dead letter).
	Event       eventkit.Event        `json:"-"`
	TraceParent string                `json:"traceparent,omitempty"`
	Outbox      []OutboxEntry         `json:"outbox"`
	Broker      []BrokerEntry         `json:"broker"`
	Applied     []Applied             `json:"applied"`
	DeadLetters []sqldeadletter.Entry `json:"-"`
	// NotFoundAt lists broker topics that could not be read, with why.
	Errors []string `json:"errors,omitempty"`
}

// Trace is what Trace found.
type Trace struct {
	Query string `json:"query"`
	// Events are the events of that id, or of that subject (oldest
	// first, at most 100).
	Events []TracedEvent `json:"events"`
}

// CheckQuery returns an error wrapping ErrBadQuery unless q can be an
// event id or a subject (printable, at most 1024 bytes, no spaces at its
// ends).
func CheckQuery(q string) error {
	if q == "" {
		return fmt.Errorf("%w: empty", ErrBadQuery)
	}
	if len(q) > 1024 {
		return fmt.Errorf("%w: %d bytes (ids and subjects are at most 1024)", ErrBadQuery, len(q))
	}
	if strings.TrimSpace(q) != q {
		return fmt.Errorf("%w: it starts or ends with white space", ErrBadQuery)
	}
	for _, r := range q {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: it holds the unprintable character %U", ErrBadQuery, r)
		}
	}
	return nil
}

// TraceEvent follows the event with id q, or else the events of subject
// q: its outbox row, its messages at the broker, the groups whose inbox
// recorded it and its dead letters. An unknown id gives a Trace with no
// events. Topics that cannot be read at the broker are named in the
// event's Errors; the rest of the trace is still returned.
func TraceEvent(ctx context.Context, cfg TraceConfig, q string) (*Trace, error) {
	if err := CheckQuery(q); err != nil {
		return nil, err
	}
	if cfg.DB == nil {
		return nil, fmt.Errorf("%w: DB is required", ErrConfig)
	}
	c := cfg.Config
	if c.Topic == "" {
		c.Topic = "-"
	}
	if cfg.Stream == nil {
		c.Stream = memStream{}
	}
	if err := c.defaults(); err != nil {
		return nil, err
	}
	d := db{c.DB, c.Dialect}
	tr := &Trace{Query: q, Events: []TracedEvent{}}
	byID := map[string]*TracedEvent{}
	var ids []string
	get := func(id, topic string, ev eventkit.Event) *TracedEvent {
		t := byID[id]
		if t == nil {
			t = &TracedEvent{ID: id, Topic: topic, Subject: ev.Subject, Event: ev, Outbox: []OutboxEntry{}, Broker: []BrokerEntry{}, Applied: []Applied{}}
			t.Seq, _, _ = eventkit.SubjectSeq(ev)
			t.TraceParent = ev.Extensions["traceparent"]
			byID[id] = t
			ids = append(ids, id)
		}
		return t
	}

	// Outbox rows: by id, else by subject.
	rows, err := d.outboxRows(ctx, c.OutboxTable, rowFilter{id: q})
	if err != nil {
		return nil, err
	}
	bySubject := len(rows) == 0
	if bySubject {
		if rows, err = d.outboxRows(ctx, c.OutboxTable, rowFilter{subject: q}); err != nil {
			return nil, err
		}
	}
	topics := map[string]bool{}
	for _, r := range rows {
		t := get(r.Event.ID, r.Topic, r.Event)
		topics[r.Topic] = true
		t.Outbox = append(t.Outbox, OutboxEntry{Seq: r.Seq, Topic: r.Topic, State: r.State, Attempts: r.Attempts, Reason: r.Reason, Created: r.Created, At: r.At})
	}
	// Dead letters of the id.
	dls, dlErr := sqldeadletter.New(c.DB, c.Dialect, c.DeadLetterTable)
	if dlErr == nil {
		if entries, err := dls.List(ctx, sqldeadletter.Filter{EventID: q}); err == nil {
			for _, e := range entries {
				t := get(e.EventID, e.Topic, deadletter.Original(e.Event))
				t.DeadLetters = append(t.DeadLetters, e)
				topics[e.Topic] = true
			}
		}
	}
	for _, tp := range cfg.Topics {
		topics[tp] = true
	}

	// The broker: every message of the id (or subject) in those topics.
	if cfg.Stream != nil {
		names := make([]string, 0, len(topics))
		for tp := range topics {
			names = append(names, tp)
		}
		sort.Strings(names)
		var errs []string
		for _, tp := range names {
			err := cfg.Stream.Read(ctx, tp, time.Time{}, func(m Message) error {
				if m.DecodeErr != nil {
					return nil
				}
				id := m.Event.ID
				orig, replay := m.Event.Extensions[deadletter.ExtReplayOf]
				if replay {
					id = orig
				}
				match := id == q || (byID[id] != nil) || (m.Event.Subject == q && len(byID) < 100)
				if !match {
					return nil
				}
				ev := m.Event
				if replay {
					ev.ID = orig
				}
				t := get(id, tp, ev)
				if t.Topic == "" {
					t.Topic = tp
				}
				be := BrokerEntry{Topic: tp, Pos: m.Pos, Time: m.Time, MessageID: m.Event.ID}
				if replay {
					be.ReplayFor = m.Event.Extensions[deadletter.ExtReplayGroup]
				}
				t.Broker = append(t.Broker, be)
				return nil
			})
			if err != nil {
				errs = append(errs, fmt.Sprintf("broker topic %s: %v", tp, err))
			}
		}
		for _, id := range ids {
			byID[id].Errors = append(byID[id].Errors, errs...)
		}
		if len(ids) == 0 && len(errs) > 0 {
			return tr, errors.New(strings.Join(errs, "; "))
		}
	} else {
		for _, id := range ids {
			byID[id].Errors = append(byID[id].Errors, "no broker: its messages were not searched")
		}
	}

	// Inbox rows and dead letters of each event found.
	for _, id := range ids {
		t := byID[id]
		groups, err := d.inboxGroups(ctx, c.InboxTable, id)
		if err != nil {
			t.Errors = append(t.Errors, err.Error())
		}
		for g, a := range groups {
			t.Applied = append(t.Applied, Applied{Group: g, At: a.At, Rows: a.Rows})
		}
		sort.Slice(t.Applied, func(i, j int) bool { return t.Applied[i].Group < t.Applied[j].Group })
		if dlErr == nil && len(t.DeadLetters) == 0 {
			if entries, err := dls.List(ctx, sqldeadletter.Filter{EventID: id}); err == nil {
				t.DeadLetters = entries
			}
		}
		tr.Events = append(tr.Events, *t)
		if len(tr.Events) == 100 {
			break
		}
	}
	return tr, nil
}
