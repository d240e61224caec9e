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
	"github.com/spf13/pflag"

	"github.com/eventkit/eventkit/internal/redact"
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
//
// Every command redacts the URLs it shows (internal/redact). Behind that,
// everything written to stdout and stderr, panics included, is scrubbed of
// the secrets found in the arguments and the EVENTKIT_* environment, so that
// a client library quoting its URL cannot print a password either.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	values := append([]string(nil), args...)
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "EVENTKIT_") || strings.HasSuffix(k, "_STORE") {
			values = append(values, v)
		}
	}
	values = append(values, configSecrets(args)...) // relay and console --config
	scrub := redact.NewScrubber(values...)
	rawStderr := stderr
	stdout, stderr = scrub.Writer(stdout), scrub.Writer(stderr)
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "eventkit: panic: %s\n%s", redact.URL(fmt.Sprint(p)), debug.Stack())
			code = 1
		}
	}()
	root := newRoot(stdout, stderr, rawStderr)
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
	// terminal is the unwrapped stderr, to tell whether it is a terminal.
	terminal io.Writer
}

// check refuses log settings the logger would otherwise ignore in silence.
func (g *globals) check() error {
	switch strings.ToLower(g.logLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	switch g.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	return nil
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

func newRoot(stdout, stderr, terminal io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr, terminal: terminal}
	root := &cobra.Command{
		Use:   "eventkit",
		Short: "Reliable events for Go services: outbox relay, dead letters, demo and benchmarks",
		Long: `eventkit moves events from a service's database to a broker and into other
services, at least once, with no duplicate effects (with an inbox) and, in
strict order mode, in order per subject.

Start with the demo (no servers needed):

  eventkit demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	info, ok := debug.ReadBuildInfo()
	root.Version = buildVersion(info, ok)
	root.SetOut(stdout)
	root.SetErr(stderr)
	envFlag(root.PersistentFlags(), &g.logLevel, "log-level", "EVENTKIT_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	envFlag(root.PersistentFlags(), &g.logFormat, "log-format", "EVENTKIT_LOG_FORMAT", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err, c.CommandPath()} })
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		if err := g.check(); err != nil {
			return usageError{err, c.CommandPath()}
		}
		return nil
	}
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands are the subcommands, registered by each command's file.
var commands []func(*globals) *cobra.Command

// envFlag defines a string flag whose value defaults to the environment
// variable env, or else to def. --help shows def, never the variable's
// value: it may hold a password.
func envFlag(fs *pflag.FlagSet, p *string, name, env, def, usage string) {
	v := def
	if e := os.Getenv(env); e != "" {
		v = e
	}
	fs.StringVar(p, name, v, usage+" (env "+env+")")
	fs.Lookup(name).DefValue = def
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}
