package schemacheck

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/eventkit/eventkit"
)

// ErrBreaking is wrapped by the error Command.Check returns when it found
// breaking changes (after printing them).
var ErrBreaking = errors.New("breaking schema changes")

// Command runs `snapshot` and `check` on a registry, with the flags both
// `eventkit schema` and a program of yours calling Main take.
type Command struct {
	Lock            string   // lock file; "-" is stdout for snapshot
	JSON            bool     // check: print the report as JSON
	Retired         []string // TYPE or TYPE@VERSION retired
	RequireUpcaster bool     // check: see CompareOptions
}

// Flags defines the command's flags on fs; check adds the flags only check
// takes.
func (c *Command) Flags(fs *pflag.FlagSet, check bool) {
	fs.StringVar(&c.Lock, "lock", DefaultLockFile, "lock file (snapshot: - writes to stdout)")
	fs.StringSliceVar(&c.Retired, "retired", nil, "event type (TYPE) or version (TYPE@VERSION) retired: no longer registered on purpose (repeatable)")
	if check {
		fs.BoolVar(&c.JSON, "json", false, "print the findings and notes as JSON")
		fs.BoolVar(&c.RequireUpcaster, "require-upcaster", false, "fail when a raised version breaks the previous one and no upcaster leads there")
	}
}

// Snapshot writes the lock file of reg.
func (c *Command) Snapshot(reg *eventkit.Registry, stdout io.Writer) error {
	l, err := Snapshot(reg, Retired(c.Retired...))
	if err != nil {
		return err
	}
	if err := WriteFile(c.Lock, l, stdout); err != nil {
		return fmt.Errorf("schema snapshot: %w", err)
	}
	if c.Lock != "-" {
		_, err = fmt.Fprintf(stdout, "wrote %s: %d registrations\n", c.Lock, len(l.Types))
	}
	return err
}

// Check compares reg with the lock file, prints one line per breaking
// change on stdout (notes on stderr) or the JSON report, and returns an
// error wrapping ErrBreaking if there is a breaking change, or the
// *LockError of a lock file it cannot read.
func (c *Command) Check(reg *eventkit.Registry, stdout, stderr io.Writer) error {
	old, err := ReadFile(c.Lock)
	if err != nil {
		return err
	}
	cur, err := Snapshot(reg, Retired(c.Retired...))
	if err != nil {
		return err
	}
	r := Compare(old, cur, CompareOptions{RequireUpcaster: c.RequireUpcaster})
	if c.JSON {
		if err := writeReportJSON(stdout, c.Lock, r); err != nil {
			return err
		}
	} else {
		for _, f := range r.Findings {
			fmt.Fprintln(stdout, f)
		}
		for _, n := range r.Notes {
			fmt.Fprintln(stderr, "note: "+n)
		}
		if r.OK() {
			fmt.Fprintf(stdout, "schema check: %d registrations compatible with %s\n", len(cur.Types), c.Lock)
		}
	}
	if !r.OK() {
		return fmt.Errorf("schema check: %w: %d against %s (raise the event's version to change its schema incompatibly; see docs/schema.md)",
			ErrBreaking, len(r.Findings), c.Lock)
	}
	return nil
}

// Main runs `snapshot` or `check` (args[0]) with the flags that follow, on
// reg, and returns the exit status: 0, 1 on a breaking change or an error
// (one line on stderr), 2 on a usage error. It is what a small program in
// your repository calls, since the eventkit command cannot load your Go
// types:
//
//	func main() { os.Exit(schemacheck.Main(myevents.Registry(), os.Args[1:], os.Stdout, os.Stderr)) }
func Main(reg *eventkit.Registry, args []string, stdout, stderr io.Writer) int {
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "schemacheck: %s\nusage: snapshot|check [--lock FILE] [--retired TYPE[@VERSION]]... [--json] [--require-upcaster]\n", msg)
		return 2
	}
	if len(args) == 0 || (args[0] != "snapshot" && args[0] != "check") {
		return usage("want a command: snapshot or check")
	}
	var c Command
	fs := pflag.NewFlagSet(args[0], pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Flags(fs, args[0] == "check")
	if err := fs.Parse(args[1:]); err != nil {
		return usage(err.Error())
	}
	if fs.NArg() > 0 {
		return usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	var err error
	if args[0] == "snapshot" {
		err = c.Snapshot(reg, stdout)
	} else {
		err = c.Check(reg, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "schemacheck: "+err.Error())
		return 1
	}
	return 0
}
