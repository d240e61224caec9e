package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newDLQCmd) }

type dlqFilter struct {
	topic, group, typ, since, until string
	limit                           int
	all                             bool
}

func (f *dlqFilter) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.topic, "topic", "", "only dead letters from this original topic")
	cmd.Flags().StringVar(&f.group, "group", "", "only dead letters of this consumer group")
	cmd.Flags().StringVar(&f.typ, "type", "", "only events of this type")
	cmd.Flags().StringVar(&f.since, "since", "", "only dead letters since a time (RFC 3339) or a duration ago (2h)")
	cmd.Flags().StringVar(&f.until, "until", "", "only dead letters before a time (RFC 3339) or a duration ago")
}

func (f *dlqFilter) filter(ids []string) ([]sqldeadletter.Filter, error) {
	since, err := parseTime(f.since)
	if err != nil {
		return nil, err
	}
	until, err := parseTime(f.until)
	if err != nil {
		return nil, err
	}
	base := sqldeadletter.Filter{Topic: f.topic, Group: f.group, Type: f.typ, Since: since, Until: until, Limit: f.limit}
	if len(ids) == 0 {
		return []sqldeadletter.Filter{base}, nil
	}
	out := make([]sqldeadletter.Filter, len(ids))
	for i, id := range ids {
		out[i] = base
		out[i].EventID = id
	}
	return out, nil
}

func (f *dlqFilter) empty() bool {
	return f.topic == "" && f.group == "" && f.typ == "" && f.since == "" && f.until == ""
}

// filterHint names the filter flags in a usage error.
const filterHint = "a filter (--topic, --type, --group, --since, --until)"

// selection is what a command that changes dead letters (replay, purge,
// skip) was told to act on: the event ids args, the filter, or --all.
// Given none of them, it is a usage error: "say what to <what>: event ids,
// <filters> or --all".
func (f *dlqFilter) selection(cmd *cobra.Command, args []string, what, filters string) ([]sqldeadletter.Filter, error) {
	if len(args) == 0 && f.empty() && !f.all {
		return nil, usageError{fmt.Errorf("say what to %s: event ids, %s or --all", what, filters), cmd.CommandPath()}
	}
	fs, err := f.filter(args)
	if err != nil {
		return nil, usageError{err, cmd.CommandPath()}
	}
	return fs, nil
}

func newDLQCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay, skip and purge dead letters",
		Long: `Dead letters are events that a consumer gave up on (every attempt failed, a
permanent error, an event type with no route, or a message that is not a
valid event). The consumer runtime publishes them to dead-letter topics
(<topic>.dlq, provisioned with the collector's group before the first one),
each with an id of its own; the relay daemon (eventkit relay --collect-dlq
...) or the consumer process stores them in the dead-letter table, one row
per (topic, group, original event id), where these commands find them. Event
ids given to these commands are the original events' ids.`,
	}

	var lf dlqFilter
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters with their reason and attempts",
		Example: `  eventkit dlq list --store postgres://postgres@127.0.0.1:5432/test --topic orders --since 24h
  eventkit dlq list --store sqlite:///var/lib/inventory.db --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs, err := lf.filter(nil)
			if err != nil {
				return usageError{err, cmd.CommandPath()}
			}
			ctx := cmd.Context()
			dl, closeStore, err := c.openDeadLetters(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			entries, err := dl.List(ctx, fs[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g.stdout, entriesJSON(entries, false))
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEAD AT\tTOPIC\tGROUP\tTYPE\tEVENT ID\tATTEMPTS\tREASON\tREPLAYED\tERROR")
			for _, e := range entries {
				replayed := "-"
				if !e.ReplayedAt.IsZero() {
					replayed = fmt.Sprintf("%dx", e.Replays)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.DeadAt.Format(time.RFC3339), e.Topic, e.Group,
					e.EventType, e.EventID, e.Attempts, e.Reason, replayed, shorten(e.Error, 60))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d dead letters\n", len(entries))
			return nil
		},
	}
	lf.flags(list)
	list.Flags().IntVar(&lf.limit, "limit", 100, "show at most this many (0: all)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:     "show EVENT-ID",
		Short:   "Show one dead letter whole: attributes, failure headers and payload",
		Example: `  eventkit dlq show --store postgres://postgres@127.0.0.1:5432/test 0192f0c4-7a9e-7c1b-9f0e-5b7d2c1a9e33`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			dl, closeStore, err := c.openDeadLetters(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			entries, err := dl.List(ctx, sqldeadletter.Filter{EventID: args[0]})
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				return fmt.Errorf("no dead letter with event id %s", args[0])
			}
			return writeJSON(g.stdout, entriesJSON(entries, true))
		},
	}

	var rf dlqFilter
	replay := &cobra.Command{
		Use:   "replay [EVENT-ID ...]",
		Short: "Republish dead letters' original events to their topics, for the failing group",
		Long: `replay republishes the original event (without the dead-letter attributes) to
its original topic and then marks the dead letter replayed. The replay has a
message id of its own (so a broker's duplicate window, such as JetStream's,
cannot drop it) and is addressed to the group that gave up: only that group's
consumers handle it, with the original event id; other groups of the topic
skip it. It is at least once: if it stops between the two, the next replay
publishes the event again, and consumers with an inbox drop the duplicate. A
subject that a dead letter parked (strict order) is resumed first so that the
replayed event runs before the subject's later events. Give event ids,
filters, or --all.`,
		Example: `  eventkit dlq replay --store postgres://... --broker nats://127.0.0.1:4222 0192f0c4-7a9e-7c1b-9f0e-5b7d2c1a9e33
  eventkit dlq replay --store postgres://... --broker nats://127.0.0.1:4222 --topic orders --since 1h
  eventkit dlq replay --store postgres://... --broker nats://127.0.0.1:4222 --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := rf.selection(cmd, args, "replay", filterHint)
			if err != nil {
				return err
			}
			unreplayed := false
			if len(args) == 0 {
				for i := range fs {
					fs[i].Replayed = &unreplayed // a filtered replay skips what was replayed already
				}
			}
			ctx := cmd.Context()
			dl, in, closeStore, err := c.openParked(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(ctx)
			var total sqldeadletter.ReplayResult
			for _, f := range fs {
				// Strict order: a subject parked at a dead letter runs it
				// first again when it comes back.
				if _, err := dl.Unpark(ctx, in, f); err != nil {
					return err
				}
				res, err := dl.Replay(ctx, b, f)
				total.Replayed += res.Replayed
				total.Skipped += res.Skipped
				if err != nil {
					fmt.Fprintf(g.stdout, "replayed %d before the error\n", total.Replayed)
					return err
				}
			}
			fmt.Fprintf(g.stdout, "replayed %d dead letters", total.Replayed)
			if total.Skipped > 0 {
				fmt.Fprintf(g.stdout, "; skipped %d undecodable ones (they hold raw bytes, not events)", total.Skipped)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	rf.flags(replay)
	replay.Flags().BoolVar(&rf.all, "all", false, "replay every dead letter not replayed yet")

	var pf dlqFilter
	var yes bool
	purge := &cobra.Command{
		Use:   "purge [EVENT-ID ...]",
		Short: "Delete dead letters (asks for confirmation unless --yes)",
		Example: `  eventkit dlq purge --store postgres://... --topic orders --until 720h
  eventkit dlq purge --store postgres://... --all --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := pf.selection(cmd, args, "purge", "a filter")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			dl, closeStore, err := c.openDeadLetters(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			var n int64
			for _, f := range fs {
				k, err := dl.Count(ctx, f)
				if err != nil {
					return err
				}
				n += k
			}
			if n == 0 {
				fmt.Fprintln(g.stdout, "nothing to purge")
				return nil
			}
			if !yes {
				if !confirm(cmd.InOrStdin(), g.stdout, fmt.Sprintf("Delete %d dead letters for good? Type yes: ", n)) {
					return fmt.Errorf("not confirmed: nothing deleted (use --yes to skip the question)")
				}
			}
			var deleted int64
			for _, f := range fs {
				k, err := dl.Purge(ctx, f)
				if err != nil {
					return err
				}
				deleted += k
			}
			fmt.Fprintf(g.stdout, "purged %d dead letters\n", deleted)
			return nil
		},
	}
	pf.flags(purge)
	purge.Flags().BoolVar(&pf.all, "all", false, "purge every dead letter")
	purge.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")

	for _, s := range []*cobra.Command{list, show, purge} {
		c.storeFlags(s)
	}
	c.storeFlags(replay)
	c.brokerFlag(replay)
	cmd.AddCommand(list, show, replay, purge, newDLQSkip(c, g))
	return cmd
}

// confirm asks question and reports whether the answer is "yes". With no
// input (a closed or empty stdin) the answer is no.
func confirm(in io.Reader, out io.Writer, question string) bool {
	fmt.Fprint(out, question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	fmt.Fprintln(out)
	return strings.TrimSpace(line) == "yes"
}

type entryJSON struct {
	Topic     string    `json:"topic"`
	Group     string    `json:"group"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Reason    string    `json:"reason"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	DeadAt    time.Time `json:"dead_at"`
	Replays   int       `json:"replays"`
	// The fields below are null when absent: ReplayedAt for a dead letter
	// never replayed, the last three in dlq list (dlq show prints them),
	// and Payload for data that is not UTF-8 text.
	ReplayedAt *time.Time        `json:"replayed_at"`
	Headers    map[string]string `json:"headers"`
	Event      json.RawMessage   `json:"event"`
	Payload    *string           `json:"payload"`
}

func entriesJSON(entries []sqldeadletter.Entry, whole bool) []entryJSON {
	out := make([]entryJSON, 0, len(entries))
	for _, e := range entries {
		j := entryJSON{Topic: e.Topic, Group: e.Group, EventID: e.EventID, EventType: e.EventType, Reason: e.Reason,
			Error: e.Error, Attempts: e.Attempts, DeadAt: e.DeadAt.UTC(), Replays: e.Replays, ReplayedAt: timeJSON(e.ReplayedAt)}
		if whole {
			j.Headers = map[string]string{}
			keys := make([]string, 0, len(e.Event.Extensions))
			for k := range e.Event.Extensions {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				j.Headers[k] = e.Event.Extensions[k]
			}
			j.Event, _ = e.Event.MarshalJSON()
			if utf8.Valid(e.Event.Data) {
				p := string(e.Event.Data)
				j.Payload = &p
			}
		}
		out = append(out, j)
	}
	return out
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
