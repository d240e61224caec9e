package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/outbox"
)

func init() { commands = append(commands, newMigrateCmd) }

func newMigrateCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	cmd := &cobra.Command{
		Use:   "migrate up|status|sql|down",
		Short: "Create, inspect or undo the outbox, inbox and dead-letter tables",
		Long: `Every table eventkit owns is versioned. The outbox records its versions in
<outbox table>_migrations; the inbox and dead-letter tables record theirs in
eventkit_migrations (one row per table and version). Inbox and dead-letter
tables created by earlier, unversioned releases are adopted as they are
(recorded as applied, no data changed) by the next migrate up.

migrate up applies what is not applied yet; it is idempotent. migrate status
shows which versions are applied. migrate sql prints the SQL that migrate up
runs on a database where none is applied, without running it. migrate down
undoes the last applied version of one table (see migrate down --help).`,
		Example: `  eventkit migrate up --store postgres://postgres@127.0.0.1:5432/test
  eventkit migrate status --store sqlite:///var/lib/orders.db
  eventkit migrate sql --store postgres://postgres@127.0.0.1:5432/test > eventkit.sql
  eventkit migrate down inbox --store sqlite:///var/lib/orders.db`,
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
			c.create = true
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
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show which migrations are applied",
		Example: `  eventkit migrate status --store postgres://postgres@127.0.0.1:5432/test
  eventkit migrate status --store sqlite:///var/lib/orders.db --json`,
		Args: cobra.NoArgs,
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
			table := c.outboxTable
			if table == "" {
				table = outbox.DefaultTable
			}
			rows := []migrationJSON{}
			for _, m := range ms {
				rows = append(rows, migrationJSON{Table: table, Kind: "outbox", Version: m.Version, Name: m.Name, Applied: m.Applied, AppliedAt: timeJSON(m.AppliedAt)})
			}
			in, err := c.inbox(st)
			if err != nil {
				return err
			}
			dl, err := c.deadLetters(st)
			if err != nil {
				return err
			}
			for _, t := range []struct {
				kind, name string
				m          outbox.MigrationStatuser
			}{{"inbox", in.Table(), in}, {"dead letters", dl.Table(), dl}} {
				ms, err := t.m.MigrationStatus(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", t.kind, err)
				}
				for _, m := range ms {
					rows = append(rows, migrationJSON{Table: t.name, Kind: t.kind, Version: m.Version, Name: m.Name, Applied: m.Applied, AppliedAt: timeJSON(m.AppliedAt)})
				}
			}
			if asJSON {
				return writeJSON(g.stdout, rows)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TABLE\tVERSION\tNAME\tAPPLIED")
			for _, r := range rows {
				applied := "no"
				switch {
				case r.AppliedAt != nil:
					applied = r.AppliedAt.Format("2006-01-02 15:04:05Z")
				case r.Applied:
					applied = "yes"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Kind, r.Version, r.Name, applied)
			}
			return w.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	sqlCmd := &cobra.Command{
		Use:   "sql",
		Short: "Print the SQL that migrate up runs on a fresh database, without running it",
		Long: `sql prints the statements migrate up runs on a database where nothing is
applied: the outbox table's versioned migrations (with the INSERTs recording
them in <outbox table>_migrations), then the inbox's and the dead-letter
table's versions (with the INSERTs recording them in eventkit_migrations).
Nothing is run and nothing is created (a SQLite file that does not exist
yet is not created either). Run the output by hand (psql -f, mysql <,
sqlite3) and migrate status reports every migration applied.`,
		Example: `  eventkit migrate sql --store postgres://postgres@127.0.0.1:5432/test > eventkit.sql
  eventkit migrate sql --store sqlite:///var/lib/orders.db --outbox-table orders_outbox`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if path, ok := sqlitePath(c.store); ok {
				if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
					// The SQL depends on the dialect and the table names
					// only: an in-memory database stands in for the file.
					c.store, c.create = "sqlite::memory:", true
				}
			}
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			sq, ok := st.Outbox.(interface{ MigrationSQL() (string, error) })
			if !ok {
				return fmt.Errorf("this store cannot print its migrations")
			}
			script, err := sq.MigrationSQL()
			if err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			in, err := c.inbox(st)
			if err != nil {
				return err
			}
			inSQL, err := in.MigrationSQL()
			if err != nil {
				return fmt.Errorf("inbox: %w", err)
			}
			dl, err := c.deadLetters(st)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "-- eventkit migrate sql: what migrate up runs on a database where nothing is applied.\n\n-- outbox\n%s", script)
			fmt.Fprintf(g.stdout, "\n-- inbox (%s)\n%s", in.Table(), inSQL)
			fmt.Fprintf(g.stdout, "\n-- dead letters (%s)\n%s", dl.Table(), dl.MigrationSQL())
			return nil
		},
	}
	var force bool
	down := &cobra.Command{
		Use:   "down inbox|dead-letters",
		Short: "Undo the last applied version of the inbox or the dead-letter table",
		Long: `down undoes the last applied version of one table and says which:

  inbox         version 2 (create_positions): drops <inbox table>_positions
                (the subject positions of strict order)
                version 1 (create_processed_events): drops the inbox table
  dead-letters  version 1 (create_dead_letters): drops the dead-letter table

Each version drops a table, so down refuses, changing nothing, while that
table holds rows (dropping processed keys makes redeliveries run again;
dropping dead letters loses them), unless --force. Run it once per version.
The outbox has no down: its versions hold events and subject counters.`,
		Example: `  eventkit migrate down inbox --store sqlite:///var/lib/orders.db
  eventkit migrate down dead-letters --force --store postgres://postgres@127.0.0.1:5432/test`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"inbox", "dead-letters"},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var target interface {
				MigrateDown(ctx context.Context, force bool) (outbox.Migration, error)
				Table() string
			}
			switch args[0] {
			case "inbox", "dead-letters":
			case "outbox":
				return fmt.Errorf("migrate down: the outbox has no down migration (its versions hold events and subject counters); drop its tables by hand if you mean it")
			default:
				return fmt.Errorf("migrate down: unknown table %q: want inbox or dead-letters", args[0])
			}
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if args[0] == "inbox" {
				target, err = c.inbox(st)
			} else {
				target, err = c.deadLetters(st)
			}
			if err != nil {
				return err
			}
			m, err := target.MigrateDown(ctx, force)
			if err != nil {
				return err
			}
			if m.Version == 0 {
				fmt.Fprintf(g.stdout, "%s (%s): no version applied, nothing to undo\n", args[0], target.Table())
				return nil
			}
			fmt.Fprintf(g.stdout, "%s (%s): undid version %d (%s)\n", args[0], target.Table(), m.Version, m.Name)
			return nil
		},
	}
	down.Flags().BoolVar(&force, "force", false, "drop the table even if it holds rows")
	up.Flags().IntVar(&partitions, "partitions", 1, "split the outbox into this many partitions (1-4096; stop all relays first)")
	for _, s := range []*cobra.Command{up, status, sqlCmd, down} {
		c.storeFlags(s)
		cmd.AddCommand(s)
	}
	return cmd
}

// sqlitePath is the file a SQLite store URL names (as connect.OpenStore
// reads it).
func sqlitePath(u string) (string, bool) {
	if strings.Contains(u, "://") && !strings.HasPrefix(u, "sqlite://") {
		return "", false
	}
	if !strings.HasPrefix(u, "sqlite:") && !strings.HasSuffix(u, ".db") && !strings.HasSuffix(u, ".sqlite") {
		return "", false
	}
	return strings.TrimPrefix(strings.TrimPrefix(u, "sqlite://"), "sqlite:"), true
}
