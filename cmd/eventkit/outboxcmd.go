package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/outbox"
	"github.com/eventkit/eventkit/outbox/pgcdc"
)

func init() { commands = append(commands, newOutboxCmd) }

func newOutboxCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	var asJSON bool
	var requeue []int64
	var slotName string
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
			var slot *pgcdc.Status
			if st.Pool != nil {
				r, err := pgcdc.New(st.Pool, nil, pgcdc.Config{Table: c.outboxTable, Slot: slotName})
				if err != nil {
					return err
				}
				cs, err := r.Status(ctx)
				if err != nil {
					return err
				}
				if cs.SlotExists {
					slot = &cs
				} else if cs.OtherDatabase != "" {
					fmt.Fprintf(g.stderr, "note: replication slot %s belongs to database %q, not to this one: not shown\n", cs.Slot, cs.OtherDatabase)
				}
			}
			var parts *partitionsJSON
			if ps, ok := st.Outbox.(outbox.Partitioned); ok {
				ls, err := ps.Leases().List(ctx)
				if err != nil {
					return err
				}
				if ls.Partitions > 1 {
					parts = &partitionsJSON{Count: ls.Partitions, Leaders: ls.LeadersOf(), Instances: ls.Instances}
					for _, l := range ls.Leases {
						if !l.Held() {
							parts.Unled = append(parts.Unled, l.Partition)
						}
					}
				}
			}
			if asJSON {
				return writeJSON(g.stdout, outboxStatusOut(s, slot, parts))
			}
			fmt.Fprintf(g.stdout, "backlog:    %d events\n", s.Backlog)
			if s.Backlog > 0 {
				fmt.Fprintf(g.stdout, "oldest:     %s (%s ago)\n", s.Oldest.UTC().Format(time.RFC3339), s.OldestAge.Round(time.Millisecond))
			}
			fmt.Fprintf(g.stdout, "delivered:  %d retained\n", s.Delivered)
			fmt.Fprintf(g.stdout, "parked:     %d\n", s.ParkedCount)
			if slot != nil {
				active := "no relay streaming"
				if slot.Active {
					active = fmt.Sprintf("streaming (pid %d)", slot.ActivePID)
				}
				fmt.Fprintf(g.stdout, "cdc slot:   %s, %s, lag %s, WAL retained %s, wal_status %s\n", slot.Slot, active,
					bytesText(slot.LagBytes), bytesText(slot.RetainedBytes), slot.WALStatus)
			}
			if parts != nil {
				fmt.Fprintf(g.stdout, "partitions: %d, %d relays alive, %d not led\n", parts.Count, len(parts.Instances), len(parts.Unled))
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "\nINSTANCE\tPARTITIONS")
				insts := make([]string, 0, len(parts.Leaders))
				for in := range parts.Leaders {
					insts = append(insts, in)
				}
				sort.Strings(insts)
				for _, in := range insts {
					fmt.Fprintf(w, "%s\t%s\n", in, intsText(parts.Leaders[in]))
				}
				for _, in := range parts.Instances {
					if _, ok := parts.Leaders[in]; !ok {
						fmt.Fprintf(w, "%s\tnone (standby)\n", in)
					}
				}
				_ = w.Flush()
			}
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
	status.Flags().StringVar(&slotName, "slot", "", "CDC replication slot to report on (default: the per-database name, see pgcdc.DefaultSlotName)")
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
	cmd.AddCommand(status, requeueCmd, newCDCCmd(g))
	return cmd
}

func newCDCCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	var slot string
	cmd := &cobra.Command{
		Use:   "cdc setup|drop",
		Short: "Create or drop the replication slot and publication of the CDC relay (PostgreSQL)",
		Long: `The CDC relay (eventkit relay --mode cdc) streams the outbox table's inserts
from a durable logical replication slot. A slot whose relay is down keeps
WAL on the server's disk until it is dropped: drop the slot when you stop
using CDC. eventkit relay --mode cdc runs setup itself.

Slot names are cluster-wide: the default name is scoped to the store's
database and the outbox table (eventkit_<database>_<table>_<hash>). An
existing slot of the old default name eventkit_<table> in this database is
used instead. Both commands act only on this database's objects: a slot of
the name that belongs to another database is refused, never dropped.`,
	}
	run := func(what string, fn func(context.Context, *pgcdc.Relay) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if st.Pool == nil {
				return usageError{errors.New("CDC needs a postgres:// store"), cmd.CommandPath()}
			}
			r, err := pgcdc.New(st.Pool, nil, pgcdc.Config{Table: c.outboxTable, Slot: slot})
			if err != nil {
				return err
			}
			if err := fn(ctx, r); err != nil {
				return err
			}
			cfg := r.Config()
			fmt.Fprintf(g.stdout, "%s slot %s and publication %s on %s\n", what, cfg.Slot, cfg.Publication, cfg.Table)
			return nil
		}
	}
	setup := &cobra.Command{
		Use:     "setup",
		Short:   "Create the publication and the durable slot (idempotent; needs wal_level=logical)",
		Example: `  eventkit outbox cdc setup --store postgres://postgres@127.0.0.1:5432/test`,
		Args:    cobra.NoArgs,
		RunE:    run("created", func(ctx context.Context, r *pgcdc.Relay) error { return r.Setup(ctx) }),
	}
	drop := &cobra.Command{
		Use:     "drop",
		Short:   "Drop this database's slot and publication (stops a relay streaming from them)",
		Example: `  eventkit outbox cdc drop --store postgres://postgres@127.0.0.1:5432/test`,
		Args:    cobra.NoArgs,
		RunE:    run("dropped", func(ctx context.Context, r *pgcdc.Relay) error { return r.Teardown(ctx) }),
	}
	for _, s := range []*cobra.Command{setup, drop} {
		c.storeFlags(s)
		s.Flags().StringVar(&slot, "slot", "", "replication slot name (default: the per-database name, see pgcdc.DefaultSlotName)")
		cmd.AddCommand(s)
	}
	return cmd
}

// bytesText prints a byte count for people.
func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func intsText(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}
