package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newOutboxCmd) }

func newOutboxCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	var asJSON bool
	var requeue []int64
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Inspect an outbox: backlog, oldest event, parked events",
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the backlog, the oldest undelivered event's age, per-type counts and parked events",
		Example: `  eventkit outbox status --store postgres://postgres@127.0.0.1:5432/test
  eventkit outbox status --store sqlite:///var/lib/orders.db --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			s, err := st.Outbox.Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			fmt.Fprintf(g.stdout, "backlog:    %d events\n", s.Backlog)
			if s.Backlog > 0 {
				fmt.Fprintf(g.stdout, "oldest:     %s (%s ago)\n", s.Oldest.UTC().Format(time.RFC3339), s.OldestAge.Round(time.Millisecond))
			}
			fmt.Fprintf(g.stdout, "delivered:  %d retained\n", s.Delivered)
			fmt.Fprintf(g.stdout, "parked:     %d\n", s.ParkedCount)
			if len(s.ByType) > 0 {
				types := make([]string, 0, len(s.ByType))
				for t := range s.ByType {
					types = append(types, t)
				}
				sort.Strings(types)
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "\nTYPE\tWAITING")
				for _, t := range types {
					fmt.Fprintf(w, "%s\t%d\n", t, s.ByType[t])
				}
				_ = w.Flush()
			}
			if len(s.Parked) > 0 {
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "\nSEQ\tTOPIC\tTYPE\tID\tATTEMPTS\tPARKED AT\tREASON")
				for _, p := range s.Parked {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Seq, p.Topic, p.Type, p.ID, p.Attempts,
						p.ParkedAt.UTC().Format(time.RFC3339), p.Reason)
				}
				_ = w.Flush()
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.storeFlags(status)
	requeueCmd := &cobra.Command{
		Use:     "requeue --seq N [--seq N ...]",
		Short:   "Put parked events back into the outbox stream",
		Example: `  eventkit outbox requeue --store postgres://postgres@127.0.0.1:5432/test --seq 42`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(requeue) == 0 {
				return usageError{fmt.Errorf("give at least one --seq"), cmd.CommandPath()}
			}
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := st.Outbox.Requeue(ctx, requeue)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "requeued %d events\n", n)
			return nil
		},
	}
	requeueCmd.Flags().Int64SliceVar(&requeue, "seq", nil, "sequence number of a parked event (repeatable)")
	c.storeFlags(requeueCmd)
	cmd.AddCommand(status, requeueCmd)
	return cmd
}
