package main

import (
	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/schemacheck"
)

func init() { commands = append(commands, schemaCmd) }

func schemaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Record the demo's event schemas in a lock file and check changes against it",
		Long: `schema snapshot writes the registered event types of the demo services
(type, data version, codec, and the Protobuf descriptor or the JSON Schema
of the Go type) to a lock file to commit; schema check compares the
registry with that file and fails on a breaking change, unless the event's
data version was raised. Protobuf changes follow buf's WIRE_JSON rules;
the rules are listed in docs/schema.md.

The eventkit command knows only the demo's registry: for your own event
types, build a small program that calls schemacheck.Main with your
registry (same commands and flags; see docs/schema.md).

Exit status: 0 compatible, 1 a breaking change or an unreadable lock file,
2 a usage error.`,
		Args: cobra.NoArgs,
	}
	snap := &schemacheck.Command{}
	snapshot := &cobra.Command{
		Use:   "snapshot",
		Short: "Write the lock file of the demo's event types",
		Long: `snapshot writes the lock file (default eventkit.schema.json): one entry per
registered event type and version, sorted, with its codec and payload
schema. Commit it; review its diff like code.

  eventkit schema snapshot
  eventkit schema snapshot --lock - | less`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return snap.Snapshot(shop.NewRegistry(), g.stdout)
		},
	}
	snap.Flags(snapshot.Flags(), false)
	chk := &schemacheck.Command{}
	check := &cobra.Command{
		Use:   "check",
		Short: "Fail on a breaking change of the demo's event types against the lock file",
		Long: `check compares the demo's registry with the lock file and prints one line
per breaking change (type, version, field or property, rule, what changed),
then exits 1. A changed (type, version) must stay compatible; a version no
longer registered is breaking unless --retired names it; a new version may
change anything (the difference is noted, with whether an upcaster leads
there). Compatible changes (a new optional field, a new enum value, a new
type or version) pass.

  eventkit schema check
  eventkit schema check --lock base.schema.json --json
  eventkit schema check --retired order.legacy --retired order.created@1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return chk.Check(shop.NewRegistry(), g.stdout, g.stderr)
		},
	}
	chk.Flags(check.Flags(), true)
	cmd.AddCommand(snapshot, check)
	return cmd
}
