package main

// The --json outputs. Every command prints one style, checked by
// TestJSONStyle: snake_case keys, times as RFC 3339 strings in UTC,
// durations as float seconds in keys ending in _seconds, and null (never a
// zero time, an empty string or a missing key) for a value that is absent.
// Library structs are not printed as they are: each output has its own
// struct here.

import (
	"encoding/json"
	"io"
	"time"

	"github.com/eventkit/eventkit/audit"
	"github.com/eventkit/eventkit/internal/benchkit"
	"github.com/eventkit/eventkit/internal/demo"
	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// timeJSON is t in UTC, or nil (null) for the zero time.
func timeJSON(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// secondsJSON is d in seconds, or nil (null) when absent is true.
func secondsJSON(d time.Duration, absent bool) *float64 {
	if absent {
		return nil
	}
	s := d.Seconds()
	return &s
}

// stringJSON is s, or nil (null) when empty.
func stringJSON(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// outboxStatusJSON is `outbox status --json`.
type outboxStatusJSON struct {
	Backlog int64 `json:"backlog"`
	// Oldest and OldestAgeSeconds are null when nothing waits.
	Oldest           *time.Time       `json:"oldest"`
	OldestAgeSeconds *float64         `json:"oldest_age_seconds"`
	ByType           map[string]int64 `json:"by_type"`
	Delivered        int64            `json:"delivered"`
	ParkedCount      int64            `json:"parked_count"`
	Parked           []parkedJSON     `json:"parked"`
	CDC              *cdcJSON         `json:"cdc"`
	Partitions       *partitionsJSON  `json:"partitions"`
}

type parkedJSON struct {
	Seq      int64      `json:"seq"`
	Topic    string     `json:"topic"`
	ID       string     `json:"id"`
	Type     string     `json:"type"`
	Subject  *string    `json:"subject"`
	Attempts int        `json:"attempts"`
	Reason   string     `json:"reason"`
	ParkedAt *time.Time `json:"parked_at"`
}

// cdcJSON is the replication slot part of `outbox status --json`.
type cdcJSON struct {
	Table             string `json:"table"`
	Slot              string `json:"slot"`
	Publication       string `json:"publication"`
	SlotExists        bool   `json:"slot_exists"`
	PublicationExists bool   `json:"publication_exists"`
	Active            bool   `json:"active"`
	// ActivePID is null when no relay streams.
	ActivePID         *int   `json:"active_pid"`
	WALStatus         string `json:"wal_status"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn"`
	RestartLSN        string `json:"restart_lsn"`
	CurrentLSN        string `json:"current_lsn"`
	LagBytes          int64  `json:"lag_bytes"`
	RetainedBytes     int64  `json:"retained_bytes"`
}

// partitionsJSON is the partition part of `outbox status --json`.
type partitionsJSON struct {
	Count int `json:"count"`
	// Leaders maps each relay instance to the partitions it leads.
	Leaders map[string][]int `json:"leaders"`
	// Instances are the relays alive (standbys included).
	Instances []string `json:"instances"`
	// Unled lists partitions no relay leads now.
	Unled []int `json:"unled"`
}

func outboxStatusOut(s outbox.Status, slot *pgcdc.Status, parts *partitionsJSON) outboxStatusJSON {
	out := outboxStatusJSON{Backlog: s.Backlog, Oldest: timeJSON(s.Oldest), ByType: s.ByType,
		Delivered: s.Delivered, ParkedCount: s.ParkedCount, Parked: []parkedJSON{}, Partitions: parts}
	out.OldestAgeSeconds = secondsJSON(s.OldestAge, out.Oldest == nil)
	if out.ByType == nil {
		out.ByType = map[string]int64{}
	}
	for _, p := range s.Parked {
		out.Parked = append(out.Parked, parkedJSON{Seq: p.Seq, Topic: p.Topic, ID: p.ID, Type: p.Type, Subject: stringJSON(p.Subject),
			Attempts: p.Attempts, Reason: p.Reason, ParkedAt: timeJSON(p.ParkedAt)})
	}
	if slot != nil {
		c := &cdcJSON{Table: slot.Table, Slot: slot.Slot, Publication: slot.Publication, SlotExists: slot.SlotExists,
			PublicationExists: slot.PublicationExists, Active: slot.Active, WALStatus: slot.WALStatus,
			ConfirmedFlushLSN: slot.ConfirmedFlushLSN.String(), RestartLSN: slot.RestartLSN.String(), CurrentLSN: slot.CurrentLSN.String(),
			LagBytes: slot.LagBytes, RetainedBytes: slot.RetainedBytes}
		if slot.Active {
			pid := slot.ActivePID
			c.ActivePID = &pid
		}
		out.CDC = c
	}
	if parts != nil {
		if parts.Unled == nil {
			parts.Unled = []int{}
		}
		if parts.Instances == nil {
			parts.Instances = []string{}
		}
	}
	return out
}

// demoJSON is `demo --json`: the summary with its elapsed time in seconds.
type demoJSON struct {
	demo.Summary
	PoisonEventID  *string `json:"poison_event_id"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
}

func demoOut(s demo.Summary) demoJSON {
	if s.Verdict.Problems == nil {
		s.Verdict.Problems = []string{}
	}
	return demoJSON{Summary: s, PoisonEventID: stringJSON(s.PoisonEventID), ElapsedSeconds: s.Elapsed.Seconds()}
}

// benchJSON is one result of `bench ... --json`.
type benchJSON struct {
	Name            string  `json:"name"`
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"events_per_second"`
	// The latencies are null where the bench does not measure them.
	P50Seconds  *float64 `json:"p50_seconds"`
	P99Seconds  *float64 `json:"p99_seconds"`
	MaxSeconds  *float64 `json:"max_seconds"`
	Interrupted bool     `json:"interrupted"`
	// CPU µs per event: this process (getrusage), and the servers where
	// they run on this machine (null when remote).
	ClientCPUPerEvent float64  `json:"client_cpu_us_per_event"`
	ServerCPUPerEvent *float64 `json:"server_cpu_us_per_event"`
}

func benchOut(rs []benchkit.Result) []benchJSON {
	out := make([]benchJSON, 0, len(rs))
	for _, r := range rs {
		out = append(out, benchJSON{Name: r.Name, Events: r.Events, Seconds: r.Duration.Seconds(), EventsPerSecond: r.Rate,
			P50Seconds: secondsJSON(r.P50, r.P50 == 0), P99Seconds: secondsJSON(r.P99, r.P99 == 0),
			MaxSeconds: secondsJSON(r.Max, r.Max == 0), Interrupted: r.Interrupted, ClientCPUPerEvent: r.ClientCPUPerEvent()})
		if us, ok := r.ServerCPUPerEvent(); ok {
			out[len(out)-1].ServerCPUPerEvent = &us
		}
	}
	return out
}

// auditJSON is `audit --json`: the report, with null for an open window's
// ends and for a finding's absent fields.
type auditJSON struct {
	*audit.Report
	Since    *time.Time             `json:"since"`
	Until    *time.Time             `json:"until"`
	Notes    []string               `json:"notes"`
	Findings []findingJSON          `json:"findings"`
	Subjects []audit.SubjectSummary `json:"subjects"`
	Groups   []string               `json:"groups"`
}

type findingJSON struct {
	Kind    audit.Kind `json:"kind"`
	Topic   string     `json:"topic"`
	Subject string     `json:"subject"`
	Seq     *int64     `json:"seq"`
	EventID *string    `json:"event_id"`
	Group   *string    `json:"group"`
	Detail  string     `json:"detail"`
}

func auditOut(r *audit.Report) auditJSON {
	out := auditJSON{Report: r, Since: timeJSON(r.Since), Until: timeJSON(r.Until), Notes: r.Notes,
		Findings: []findingJSON{}, Subjects: r.Subjects, Groups: r.Groups}
	if out.Notes == nil {
		out.Notes = []string{}
	}
	if out.Subjects == nil {
		out.Subjects = []audit.SubjectSummary{}
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	for _, f := range r.Findings {
		j := findingJSON{Kind: f.Kind, Topic: f.Topic, Subject: f.Subject, EventID: stringJSON(f.EventID), Group: stringJSON(f.Group), Detail: f.Detail}
		if f.Seq > 0 {
			seq := f.Seq
			j.Seq = &seq
		}
		out.Findings = append(out.Findings, j)
	}
	return out
}

// migrationJSON is one row of `migrate status --json`.
type migrationJSON struct {
	Table   string `json:"table"`
	Kind    string `json:"kind"`
	Version int    `json:"version"`
	Name    string `json:"name"`
	Applied bool   `json:"applied"`
	// AppliedAt is null when not applied or when the table keeps no time.
	AppliedAt *time.Time `json:"applied_at"`
}
