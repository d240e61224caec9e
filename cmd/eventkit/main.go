// Command eventkit runs the eventkit demo, the outbox relay daemon, schema
// migrations, outbox and dead-letter inspection, and benchmarks.
//
//	eventkit demo                       # zero set-up: embedded NATS JetStream + SQLite
//	eventkit relay --store postgres://... --broker nats://...
//	eventkit migrate up --store ...
//	eventkit outbox status --store ...
//	eventkit dlq list --store ...
//	eventkit bench publish --broker nats://...
//
// Run `eventkit <command> --help` for each command's flags and an example.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks errors in how the command was called (exit status 2).
type usageError struct {
	err  error
	path string
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status. Errors are
// printed as one line on stderr, never as a stack trace.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	msg := strings.Join(strings.Fields(err.Error()), " ") // one line, whatever the error says
	fmt.Fprintf(stderr, "eventkit: %s\n", msg)
	var ue usageError
	var ve verdictError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.path)
		return 2
	case errors.As(err, &ve):
		return 3
	case isFlagError(err):
		return 2
	}
	return 1
}

func isFlagError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "unknown flag") || strings.Contains(s, "unknown shorthand") ||
		strings.Contains(s, "invalid argument") || strings.Contains(s, "flag needs an argument") ||
		strings.Contains(s, "unknown command") || strings.Contains(s, "accepts ") || strings.Contains(s, "requires at least")
}

// verdictError is returned by the demo when its consistency verdict fails.
type verdictError struct{ msg string }

func (e verdictError) Error() string { return e.msg }

type globals struct {
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "eventkit",
		Short: "Reliable events for Go services: outbox relay, dead letters, demo and benchmarks",
		Long: `eventkit moves events from a service's database to a broker and into other
services, at least once, with no duplicate effects.

Start with the demo (no servers needed):

  eventkit demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	info, ok := debug.ReadBuildInfo()
	root.Version = buildVersion(info, ok)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("EVENTKIT_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env EVENTKIT_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("EVENTKIT_LOG_FORMAT", "text"), "log format: text or json (env EVENTKIT_LOG_FORMAT)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err, c.CommandPath()} })
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands are the subcommands, registered by each command's file.
var commands []func(*globals) *cobra.Command

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
