package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/audit"
	"github.com/eventkit/eventkit/deadletter"
	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

type dlCount struct {
	Topic, Group      string
	Count, Unreplayed int64
}

type overviewData struct {
	Outbox outbox.Status
	Leader string
	// Partitions is set for a partitioned outbox: leadership is per
	// partition, from the outbox's lease table.
	Partitions  *outbox.Leadership
	CDC         *pgcdc.Status
	DeadLetters []dlCount
	Lag         []audit.GroupLag
	Topics      []string
	Now         time.Time
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p := page{Title: "Overview", Nav: "overview"}
	d := overviewData{Now: time.Now().UTC()}
	oops := func(what string, err error) { p.Errors = append(p.Errors, what+": "+oneLine(err)) }
	if s, err := c.cfg.Outbox.Status(ctx); err != nil {
		oops("outbox status", err)
	} else {
		d.Outbox = s
	}
	if l, err := outbox.LeadershipOf(ctx, c.cfg.Outbox); err != nil {
		oops("partition leases", err)
	} else {
		d.Partitions = l
	}
	if c.cfg.Pool != nil {
		if d.Partitions == nil {
			d.Leader = c.leader(ctx)
		}
		if cr, err := pgcdc.New(c.cfg.Pool, nil, pgcdc.Config{Table: c.cfg.OutboxTable}); err == nil {
			if cs, err := cr.Status(ctx); err != nil {
				oops("CDC slot", err)
			} else if cs.SlotExists {
				d.CDC = &cs
			}
		}
	}
	counts, err := c.deadLetterCounts(ctx)
	if err != nil {
		oops("dead letters", err)
	}
	d.DeadLetters = counts
	d.Topics = c.topics(ctx, &p)
	if c.cfg.Broker != nil {
		if b, s, err := c.getBroker(ctx); err != nil {
			oops("broker", err)
		} else if cl, ok := b.(audit.ConsumerLagger); ok {
			groups := c.groups(ctx)
			for _, t := range d.Topics {
				l, err := audit.LagOf(ctx, cl, b.Capabilities().Name, t, groups)
				if err != nil {
					oops("consumer lag of "+t, err)
				}
				d.Lag = append(d.Lag, l...)
			}
		} else if lg, ok := s.(audit.Lagger); ok {
			for _, t := range d.Topics {
				l, err := lg.Lag(ctx, t)
				if err != nil && !errors.Is(err, audit.ErrNoTopic) {
					oops("consumer lag of "+t, err)
				}
				d.Lag = append(d.Lag, l...)
			}
		}
	}
	p.Data = d
	c.render(w, http.StatusOK, "overview", p)
}

// topics are the configured topics and those the outbox and the dead
// letters name.
func (c *Console) topics(ctx context.Context, p *page) []string {
	set := map[string]bool{}
	for _, t := range c.cfg.Topics {
		set[t] = true
	}
	ts, err := audit.Topics(ctx, c.auditConfig(nil))
	if err != nil {
		p.Errors = append(p.Errors, "outbox topics: "+oneLine(err))
	}
	for _, t := range ts {
		set[t] = true
	}
	rows, err := c.cfg.DB.QueryContext(ctx, `SELECT DISTINCT topic FROM `+c.cfg.DeadLetterTable)
	if err == nil {
		for rows.Next() {
			var t string
			if rows.Scan(&t) == nil {
				set[t] = true
			}
		}
		rows.Close()
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// groups are the consumer groups the overview asks a ConsumerLagger about:
// the configured ones, the inbox table's consumers and the dead letters'
// groups (tables that do not exist are skipped).
func (c *Console) groups(ctx context.Context) []string {
	set := map[string]bool{}
	for _, g := range c.cfg.Groups {
		set[g] = true
	}
	for _, q := range []string{`SELECT DISTINCT consumer FROM ` + c.cfg.InboxTable, `SELECT DISTINCT grp FROM ` + c.cfg.DeadLetterTable} {
		rows, err := c.cfg.DB.QueryContext(ctx, q)
		if err != nil {
			continue
		}
		for rows.Next() {
			var g string
			if rows.Scan(&g) == nil && g != "" {
				set[g] = true
			}
		}
		rows.Close()
	}
	out := make([]string, 0, len(set))
	for g := range set {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// leader says who holds the outbox's leadership lock (the advisory lock
// outbox/pgoutbox documents: FNV-1a of "eventkit.outbox:"+table).
func (c *Console) leader(ctx context.Context) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte("eventkit.outbox:" + c.cfg.OutboxTable))
	k := h.Sum64()
	var pid int
	var addr, app string
	err := c.cfg.Pool.QueryRow(ctx, `SELECT l.pid, coalesce(host(a.client_addr), 'local'), coalesce(a.application_name, '')
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1`, int64(uint32(k>>32)), int64(uint32(k))).Scan(&pid, &addr, &app)
	if err != nil {
		return "no relay holds the leadership lock (no leader: nothing is being published by the polling relay)"
	}
	s := fmt.Sprintf("leader: relay on PostgreSQL backend %d from %s", pid, addr)
	if app != "" {
		s += " (" + app + ")"
	}
	return s + "; standbys wait without holding a lock and are not listed"
}

func (c *Console) deadLetterCounts(ctx context.Context) ([]dlCount, error) {
	rows, err := c.cfg.DB.QueryContext(ctx, `SELECT topic, grp, count(*), sum(CASE WHEN replayed_at IS NULL THEN 1 ELSE 0 END) FROM `+
		c.cfg.DeadLetterTable+` GROUP BY topic, grp ORDER BY topic, grp`)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", c.cfg.DeadLetterTable, err)
	}
	defer rows.Close()
	var out []dlCount
	for rows.Next() {
		var d dlCount
		if err := rows.Scan(&d.Topic, &d.Group, &d.Count, &d.Unreplayed); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// payload is an event's data for the page.
type payload struct {
	Kind string // "json", "text", "bytes", "none"
	Text string
}

func decodePayload(e eventkit.Event) payload {
	if len(e.Data) == 0 {
		return payload{Kind: "none"}
	}
	if json.Valid(e.Data) {
		var b bytes.Buffer
		if json.Indent(&b, e.Data, "", "  ") == nil {
			return payload{Kind: "json", Text: b.String()}
		}
	}
	if utf8.Valid(e.Data) {
		return payload{Kind: "text", Text: string(e.Data)}
	}
	n := min(len(e.Data), 4096)
	return payload{Kind: "bytes", Text: fmt.Sprintf("% x", e.Data[:n])}
}

type tracedView struct {
	audit.TracedEvent
	Type, Source string
	Time         time.Time
	ContentType  string
	Payload      payload
	Extensions   [][2]string
}

type traceData struct {
	Query  string
	Trace  *audit.Trace
	Events []tracedView
}

func (c *Console) trace(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	p := page{Title: "Event tracer", Nav: "trace"}
	d := traceData{Query: q}
	if _, ok := r.URL.Query()["q"]; !ok {
		p.Data = d
		c.render(w, http.StatusOK, "trace", p)
		return
	}
	if err := audit.CheckQuery(q); err != nil {
		p.Errors = append(p.Errors, "malformed event id or subject: "+oneLine(err))
		p.Data = d
		c.render(w, http.StatusBadRequest, "trace", p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	var stream audit.Stream
	if c.cfg.Broker != nil {
		var err error
		if _, stream, err = c.getBroker(ctx); err != nil {
			p.Errors = append(p.Errors, "broker: "+oneLine(err)+" (its messages were not searched)")
		}
	}
	tc := audit.TraceConfig{Config: c.auditConfig(stream), Topics: c.cfg.Topics}
	tr, err := audit.TraceEvent(ctx, tc, q)
	if err != nil {
		p.Errors = append(p.Errors, oneLine(err))
	}
	d.Trace = tr
	if tr != nil {
		for _, e := range tr.Events {
			v := tracedView{TracedEvent: e, Type: e.Event.Type, Source: e.Event.Source, Time: e.Event.Time, ContentType: e.Event.DataContentType, Payload: decodePayload(e.Event)}
			for k, val := range e.Event.Extensions {
				v.Extensions = append(v.Extensions, [2]string{k, val})
			}
			sort.Slice(v.Extensions, func(i, j int) bool { return v.Extensions[i][0] < v.Extensions[j][0] })
			d.Events = append(d.Events, v)
		}
		if len(tr.Events) == 0 && err == nil {
			p.Errors = append(p.Errors, fmt.Sprintf("no event with id or subject %q: not in the outbox, at the broker (topics searched: %s), in an inbox or among the dead letters",
				q, strings.Join(c.cfg.Topics, ", ")))
		}
	}
	p.Data = d
	c.render(w, http.StatusOK, "trace", p)
}

// dlFilter is the dead-letter filter of a form or query.
type dlFilter struct {
	Topic, Group, Type, Reason, Since, Until, ID string
}

func readFilter(get func(string) string) dlFilter {
	return dlFilter{Topic: get("topic"), Group: get("group"), Type: get("type"), Reason: get("reason"), Since: get("since"), Until: get("until"), ID: get("id")}
}

func (f dlFilter) filter() (sqldeadletter.Filter, error) {
	out := sqldeadletter.Filter{Topic: f.Topic, Group: f.Group, Type: f.Type, EventID: f.ID}
	var err error
	if out.Since, err = parseTime(f.Since); err != nil {
		return out, err
	}
	if out.Until, err = parseTime(f.Until); err != nil {
		return out, err
	}
	return out, nil
}

func (f dlFilter) empty() bool { return f == dlFilter{} }

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (2h) nor an RFC 3339 time", s)
	}
	return t, nil
}

type dlView struct {
	sqldeadletter.Entry
	Payload payload
	Parked  bool
}

type dlData struct {
	Filter  dlFilter
	Entries []dlView
	Show    *dlView
}

// listDeadLetters applies the filter, the reason included (which
// sqldeadletter.Filter does not have).
func (c *Console) listDeadLetters(ctx context.Context, f dlFilter) ([]sqldeadletter.Entry, error) {
	df, err := f.filter()
	if err != nil {
		return nil, err
	}
	st, err := c.deadLetterStore()
	if err != nil {
		return nil, err
	}
	all, err := st.List(ctx, df)
	if err != nil {
		return nil, err
	}
	if f.Reason == "" {
		return all, nil
	}
	var out []sqldeadletter.Entry
	for _, e := range all {
		if e.Reason == f.Reason {
			out = append(out, e)
		}
	}
	return out, nil
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p := page{Title: "Dead letters", Nav: "deadletters"}
	f := readFilter(r.URL.Query().Get)
	d := dlData{Filter: f}
	entries, err := c.listDeadLetters(ctx, f)
	if err != nil {
		p.Errors = append(p.Errors, oneLine(err))
	}
	for _, e := range entries {
		_, parked := e.Parked()
		v := dlView{Entry: e, Payload: decodePayload(deadletter.Original(e.Event)), Parked: parked}
		d.Entries = append(d.Entries, v)
	}
	if show := r.URL.Query().Get("show"); show != "" {
		for i := range d.Entries {
			if d.Entries[i].EventID == show && (r.URL.Query().Get("sgroup") == "" || d.Entries[i].Group == r.URL.Query().Get("sgroup")) {
				d.Show = &d.Entries[i]
				break
			}
		}
		if d.Show == nil {
			p.Errors = append(p.Errors, fmt.Sprintf("no dead letter with event id %q matches the filter", show))
		}
	}
	p.Data = d
	c.render(w, http.StatusOK, "deadletters", p)
}

func (c *Console) parked(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p := page{Title: "Parked outbox rows", Nav: "parked"}
	s, err := c.cfg.Outbox.Status(ctx)
	if err != nil {
		p.Errors = append(p.Errors, "outbox status: "+oneLine(err))
	}
	p.Data = s
	c.render(w, http.StatusOK, "parked", p)
}

// action is a mutating action as the confirmation page shows it.
type action struct {
	Op     string // replay, skip, purge, requeue
	Filter dlFilter
	Seqs   []int64
	Count  int
	What   string
}

func readAction(r *http.Request) (action, error) {
	a := action{Op: r.PostFormValue("op"), Filter: readFilter(r.PostFormValue)}
	switch a.Op {
	case "replay", "skip", "purge":
		if a.Filter.empty() && r.PostFormValue("all") != "yes" {
			return a, errors.New("say which dead letters: an event id or a filter (or all)")
		}
	case "requeue":
		for _, s := range r.PostForm["seq"] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return a, fmt.Errorf("outbox seq %q is not a positive number", s)
			}
			a.Seqs = append(a.Seqs, n)
		}
		if len(a.Seqs) == 0 {
			return a, errors.New("no parked row chosen")
		}
	default:
		return a, fmt.Errorf("unknown action %q", a.Op)
	}
	return a, nil
}

func (c *Console) confirm(w http.ResponseWriter, r *http.Request) {
	if err := c.checkCSRF(r); err != nil {
		c.fail(w, r, http.StatusForbidden, err)
		return
	}
	a, err := readAction(r)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	switch a.Op {
	case "requeue":
		a.Count = len(a.Seqs)
		a.What = fmt.Sprintf("Put %d parked outbox rows (seq %s) back into the stream: the relay publishes them again.", len(a.Seqs), joinSeqs(a.Seqs))
	default:
		entries, err := c.listDeadLetters(ctx, a.Filter)
		if err != nil {
			c.fail(w, r, http.StatusBadRequest, err)
			return
		}
		a.Count = len(entries)
		switch a.Op {
		case "replay":
			a.What = fmt.Sprintf("Republish %d dead letters' events to their topics, for the group that gave up (subjects they parked resume first).", a.Count)
		case "skip":
			a.What = fmt.Sprintf("Resume the subjects parked behind %d dead letters without running them (strict order); the dead letters stay.", a.Count)
		case "purge":
			a.What = fmt.Sprintf("Delete %d dead letters for good.", a.Count)
		}
	}
	c.render(w, http.StatusOK, "confirm", page{Title: "Confirm " + a.Op, Data: a})
}

func joinSeqs(s []int64) string {
	parts := make([]string, len(s))
	for i, n := range s {
		parts[i] = strconv.FormatInt(n, 10)
	}
	return strings.Join(parts, ", ")
}

type doneData struct {
	Op, Result string
	Back       string
}

func (c *Console) do(w http.ResponseWriter, r *http.Request) {
	if err := c.checkCSRF(r); err != nil {
		c.fail(w, r, http.StatusForbidden, err)
		return
	}
	if r.PostFormValue("confirmed") != "yes" {
		c.fail(w, r, http.StatusBadRequest, errors.New("not confirmed: nothing was done"))
		return
	}
	a, err := readAction(r)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	log := c.cfg.Logger.With("who", who(r), "action", a.Op)
	res, back, err := c.run(ctx, a)
	if err != nil {
		log.Warn("console action failed", "filter", fmt.Sprintf("%+v", a.Filter), "seqs", a.Seqs, "result", res, "err", err)
		c.fail(w, r, http.StatusBadGateway, fmt.Errorf("%s: %s: %w", a.Op, res, err))
		return
	}
	log.Info("console action", "filter", fmt.Sprintf("%+v", a.Filter), "seqs", a.Seqs, "result", res)
	c.render(w, http.StatusOK, "done", page{Title: "Done", Data: doneData{Op: a.Op, Result: res, Back: back}})
}

func (c *Console) run(ctx context.Context, a action) (result, back string, err error) {
	if a.Op == "requeue" {
		n, err := c.cfg.Outbox.Requeue(ctx, a.Seqs)
		return fmt.Sprintf("requeued %d parked rows", n), "/parked", err
	}
	df, err := a.Filter.filter()
	if err != nil {
		return "nothing done", "/deadletters", err
	}
	st, err := c.deadLetterStore()
	if err != nil {
		return "nothing done", "/deadletters", err
	}
	entries, err := c.listDeadLetters(ctx, a.Filter)
	if err != nil {
		return "nothing done", "/deadletters", err
	}
	in, err := c.inbox()
	if err != nil && a.Op != "purge" {
		return "nothing done", "/deadletters", err
	}
	// Act on each selected entry by its key, so that the reason filter
	// (which sqldeadletter.Filter lacks) holds.
	n := 0
	var skipped int
	for _, e := range entries {
		one := sqldeadletter.Filter{Topic: e.Topic, Group: e.Group, EventID: e.EventID}
		switch a.Op {
		case "replay":
			b, _, berr := c.getBroker(ctx)
			if berr != nil {
				return fmt.Sprintf("replayed %d before the broker failed", n), "/deadletters", berr
			}
			if _, err := st.Unpark(ctx, in, one); err != nil {
				return fmt.Sprintf("replayed %d", n), "/deadletters", err
			}
			res, err := st.Replay(ctx, b, one)
			n += res.Replayed
			skipped += res.Skipped
			if err != nil {
				return fmt.Sprintf("replayed %d", n), "/deadletters", err
			}
		case "skip":
			k, err := st.Skip(ctx, in, one)
			n += k
			if err != nil {
				return fmt.Sprintf("resumed %d subjects", n), "/deadletters", err
			}
		case "purge":
			k, err := st.Purge(ctx, one)
			n += int(k)
			if err != nil {
				return fmt.Sprintf("purged %d", n), "/deadletters", err
			}
		}
	}
	_ = df
	switch a.Op {
	case "replay":
		s := fmt.Sprintf("replayed %d dead letters", n)
		if skipped > 0 {
			s += fmt.Sprintf("; skipped %d undecodable ones", skipped)
		}
		return s, "/deadletters", nil
	case "skip":
		return fmt.Sprintf("resumed %d subjects", n), "/deadletters", nil
	}
	return fmt.Sprintf("purged %d dead letters", n), "/deadletters", nil
}
