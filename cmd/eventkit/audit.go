package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/audit"
)

func init() { commands = append(commands, newAuditCmd) }

// findingsError makes the command exit 1 after printing the report.
type findingsError struct{ n int }

func (e findingsError) Error() string { return fmt.Sprintf("audit: %d findings", e.n) }

func newAuditCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	var topic, since, until string
	var groups []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit --topic T [--group G ...]",
		Short: "Reconcile an outbox with the broker and the groups' inbox tables",
		Long: `audit compares what the outbox wrote for a topic with what the broker stores
and what the named consumer groups recorded in their inbox table, and reports
per subject: positions missing at the broker, events applied by no group,
events applied twice, and subjects stored out of order at the broker.

What the outbox wrote comes from its subject counters (<outbox>_subject_seq):
every event with a subject has a gap-free number per (topic, subject), so the
positions 1..N must be at the broker unless they still wait or are parked in
the outbox. Without --since the broker must hold the topic's whole history;
for a stream whose limits dropped old messages give --since. It reads NATS
JetStream (and the memory broker, for tests). It changes nothing.

Exit status: 0 when nothing was found, 1 on findings or errors.`,
		Example: `  eventkit audit --store postgres://postgres@127.0.0.1:5432/test --broker nats://127.0.0.1:4222 --topic orders --group billing --group shipping
  eventkit audit --store ... --broker ... --topic orders --group billing --since 24h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topic == "" {
				return usageError{fmt.Errorf("--topic is required"), cmd.CommandPath()}
			}
			s, err := parseTime(since)
			if err != nil {
				return usageError{err, cmd.CommandPath()}
			}
			u, err := parseTime(until)
			if err != nil {
				return usageError{err, cmd.CommandPath()}
			}
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			b, err := c.openBroker(ctx)
			if err != nil {
				return err
			}
			defer b.Close(ctx)
			stream, err := audit.ForBroker(b)
			if err != nil {
				return err
			}
			rep, err := audit.Run(ctx, audit.Config{DB: st.SQL, Dialect: st.Dialect, OutboxTable: c.outboxTable, InboxTable: c.inboxTable,
				DeadLetterTable: c.dlqTable, Stream: stream, Topic: topic, Groups: groups, Since: s, Until: u})
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(g.stdout, auditOut(rep)); err != nil {
					return err
				}
			} else {
				printReport(g, rep)
			}
			if !rep.OK() {
				return findingsError{len(rep.Findings)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "topic to audit")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "consumer group whose inbox rows count as applied (repeatable)")
	cmd.Flags().StringVar(&since, "since", "", "only events since a time (RFC 3339) or a duration ago (2h)")
	cmd.Flags().StringVar(&until, "until", "", "only events before a time (RFC 3339) or a duration ago")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON (snake_case keys, RFC 3339 times)")
	c.storeFlags(cmd)
	c.brokerFlag(cmd)
	return cmd
}

func printReport(g *globals, rep *audit.Report) {
	fmt.Fprintf(g.stdout, "topic %s at %s: %d events at the broker (%d copies), %d waiting and %d parked in the outbox\n",
		rep.Topic, rep.Broker, rep.AtBroker, rep.Republished, rep.Pending, rep.Parked)
	for _, n := range rep.Notes {
		fmt.Fprintf(g.stdout, "note: %s\n", n)
	}
	if rep.OK() {
		fmt.Fprintln(g.stdout, "no findings")
		return
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nSUBJECT\tSEQ\tKIND\tEVENT ID\tGROUP\tDETAIL")
	for _, f := range rep.Findings {
		seq := "-"
		if f.Seq > 0 {
			seq = fmt.Sprint(f.Seq)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Subject, seq, f.Kind, dash(f.EventID), dash(f.Group), f.Detail)
	}
	_ = w.Flush()
	fmt.Fprintf(g.stdout, "%d findings in %d subjects (%s)\n", len(rep.Findings), len(rep.Subjects), time.Now().UTC().Format(time.RFC3339))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
