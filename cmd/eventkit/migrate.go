package main

import (
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
		Use:   "migrate up|status|sql",
		Short: "Create or inspect the outbox, inbox and dead-letter tables",
		Long: `migrate up creates the outbox table (with its embedded, versioned migrations),
the inbox table (processed_events) and the dead-letter table, if they do not
exist. It is idempotent. migrate status shows which migrations are applied.
migrate sql prints the SQL that migrate up runs on a database where none is
applied, without running it, for review or for running by hand.`,
		Example: `  eventkit migrate up --store postgres://postgres@127.0.0.1:5432/test
  eventkit migrate status --store sqlite:///var/lib/orders.db
  eventkit migrate sql --store postgres://postgres@127.0.0.1:5432/test > eventkit.sql`,
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
			for _, t := range []struct{ kind, name string }{{"inbox", in.Table()}, {"dead letters", dl.Table()}} {
				_, qerr := st.SQL.ExecContext(ctx, "SELECT 1 FROM "+t.name+" WHERE 1 = 0")
				rows = append(rows, migrationJSON{Table: t.name, Kind: t.kind, Version: 1, Name: t.name, Applied: qerr == nil})
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
them in <outbox table>_migrations), then the inbox and dead-letter tables.
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
			fmt.Fprintf(g.stdout, "\n-- inbox (%s)\n", in.Table())
			for _, s := range inSQL {
				fmt.Fprintf(g.stdout, "%s;\n", strings.TrimSuffix(s, ";"))
			}
			fmt.Fprintf(g.stdout, "\n-- dead letters (%s)\n", dl.Table())
			for _, s := range dl.MigrationSQL() {
				fmt.Fprintf(g.stdout, "%s;\n", s)
			}
			return nil
		},
	}
	up.Flags().IntVar(&partitions, "partitions", 1, "split the outbox into this many partitions (1-4096; stop all relays first)")
	for _, s := range []*cobra.Command{up, status, sqlCmd} {
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
