package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/deadletter/sqldeadletter"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
)

// openParked opens the store with its dead-letter table and its inbox
// (whose subject positions strict-order consumers park); call the returned
// function to close the store.
func (c *conn) openParked(ctx context.Context) (*sqldeadletter.Store, *sqlinbox.Inbox, func(), error) {
	st, err := c.openStore(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	dl, err := c.deadLetters(st)
	if err == nil {
		var in *sqlinbox.Inbox
		if in, err = c.inbox(st); err == nil {
			return dl, in, st.Close, nil
		}
	}
	st.Close()
	return nil, nil, nil, err
}

// newDLQSkip is `eventkit dlq skip`.
func newDLQSkip(c *conn, g *globals) *cobra.Command {
	var sf dlqFilter
	skip := &cobra.Command{
		Use:   "skip [EVENT-ID ...]",
		Short: "Resume subjects parked behind dead letters without replaying them (strict order)",
		Long: `skip resumes each subject that a dead letter parked (consumers with strict
order park a subject when its next event is dead-lettered; its later events
wait) as if the dead-lettered event had been applied: the subject's next
events run, in order. The dead letters stay in the table (purge them when
done). Dead letters that parked nothing, or whose subject is no longer
parked at them, are left alone. The inbox (--inbox-table) must be in the
same database as the dead letters. To run the event again instead, use
replay.`,
		Example: `  eventkit dlq skip --store postgres://... 0192f0c4-7a9e-7c1b-9f0e-5b7d2c1a9e33
  eventkit dlq skip --store postgres://... --group billing --topic orders`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := sf.selection(cmd, args, "skip", filterHint)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			dl, in, closeStore, err := c.openParked(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			total := 0
			for _, f := range fs {
				n, err := dl.Skip(ctx, in, f)
				total += n
				if err != nil {
					fmt.Fprintf(g.stdout, "resumed %d subjects before the error\n", total)
					return err
				}
			}
			fmt.Fprintf(g.stdout, "resumed %d subjects\n", total)
			return nil
		},
	}
	sf.flags(skip)
	skip.Flags().BoolVar(&sf.all, "all", false, "skip every dead letter that parks a subject")
	c.storeFlags(skip)
	return skip
}
