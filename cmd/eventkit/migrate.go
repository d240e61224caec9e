package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/outbox"
)

func init() { commands = append(commands, newMigrateCmd) }

func newMigrateCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	cmd := &cobra.Command{
		Use:   "migrate up|status",
		Short: "Create or inspect the outbox, inbox and dead-letter tables",
		Long: `migrate up creates the outbox table (with its embedded, versioned migrations),
the inbox table (processed_events) and the dead-letter table, if they do not
exist. It is idempotent. migrate status shows which migrations are applied.`,
		Example: `  eventkit migrate up --store postgres://postgres@127.0.0.1:5432/test
  eventkit migrate status --store sqlite:///var/lib/orders.db`,
	}
	var partitions int
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply the migrations that are not applied yet",
		Long: `up applies the migrations that are not applied yet. With --partitions N it
also splits the outbox into N partitions by a hash of the event subject (1: not
split), so that up to N relays share the work. The count can only change while
no relay runs: stop every relay, run migrate up --partitions N, start them
again (it fails, changing nothing, while a relay holds a lease). PostgreSQL and
MySQL/MariaDB only; SQLite has one partition.`,
		Example: `  eventkit migrate up --store mysql://root@127.0.0.1:3306/test
  eventkit migrate up --partitions 16 --store postgres://postgres@127.0.0.1:5432/test`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Outbox.Migrate(ctx); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			if cmd.Flags().Changed("partitions") {
				ps, ok := st.Outbox.(outbox.PartitionSetter)
				if !ok {
					return fmt.Errorf("--partitions: this store has one partition (PostgreSQL and MySQL/MariaDB can be split)")
				}
				if err := ps.SetPartitions(ctx, partitions); err != nil {
					return fmt.Errorf("outbox: %w", err)
				}
				fmt.Fprintf(g.stdout, "outbox partitions: %d\n", partitions)
			}
			in, err := c.inbox(st)
			if err != nil {
				return err
			}
			if err := in.Migrate(ctx); err != nil {
				return fmt.Errorf("inbox: %w", err)
			}
			dl, err := c.deadLetters(st)
			if err != nil {
				return err
			}
			if err := dl.Migrate(ctx); err != nil {
				return fmt.Errorf("dead letters: %w", err)
			}
			fmt.Fprintf(g.stdout, "migrated: outbox, inbox (%s), dead letters (%s)\n", in.Table(), dl.Table())
			return nil
		},
	}
	status := &cobra.Command{
		Use:     "status",
		Short:   "Show which migrations are applied",
		Example: `  eventkit migrate status --store postgres://postgres@127.0.0.1:5432/test`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			ms, err := st.Outbox.MigrationStatus(ctx)
			if err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TABLE\tVERSION\tNAME\tAPPLIED")
			for _, m := range ms {
				applied := "no"
				if m.Applied {
					applied = m.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
				}
				fmt.Fprintf(w, "outbox\t%d\t%s\t%s\n", m.Version, m.Name, applied)
			}
			in, err := c.inbox(st)
			if err != nil {
				return err
			}
			dl, err := c.deadLetters(st)
			if err != nil {
				return err
			}
			for _, t := range []struct{ kind, name string }{{"inbox", in.Table()}, {"dead letters", dl.Table()}} {
				_, qerr := st.SQL.ExecContext(ctx, "SELECT 1 FROM "+t.name+" WHERE 1 = 0")
				applied := "yes"
				if qerr != nil {
					applied = "no"
				}
				fmt.Fprintf(w, "%s\t1\t%s\t%s\n", t.kind, t.name, applied)
			}
			return w.Flush()
		},
	}
	up.Flags().IntVar(&partitions, "partitions", 1, "split the outbox into this many partitions (1-4096; stop all relays first)")
	for _, s := range []*cobra.Command{up, status} {
		c.storeFlags(s)
		cmd.AddCommand(s)
	}
	return cmd
}
