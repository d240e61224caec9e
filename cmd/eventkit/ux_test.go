package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestLogFlagsValidated: a log level or format the logger does not know is
// a usage error (exit 2) naming the values it takes, not silently "info"
// and "text"; the environment variables are checked the same way.
func TestLogFlagsValidated(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  [2]string
		want string
	}{
		{args: []string{"--log-level", "loud", "version"}, want: "want debug, info, warn or error"},
		{args: []string{"--log-format", "xml", "version"}, want: "want text or json"},
		{args: []string{"version"}, env: [2]string{"EVENTKIT_LOG_LEVEL", "verbose"}, want: "--log-level \"verbose\""},
		{args: []string{"version"}, env: [2]string{"EVENTKIT_LOG_FORMAT", "logfmt"}, want: "--log-format \"logfmt\""},
	} {
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], tc.env[1])
		}
		var out, errb bytes.Buffer
		code := run(t.Context(), tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 and %q", tc.env, tc.args, code, errb.String(), tc.want)
		}
		if tc.env[0] != "" {
			t.Setenv(tc.env[0], "")
		}
	}
	for _, lvl := range []string{"debug", "info", "warn", "error", "DEBUG"} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), []string{"--log-level", lvl, "--log-format", "json", "version"}, &out, &errb); code != 0 {
			t.Errorf("--log-level %s: exit %d: %s", lvl, code, errb.String())
		}
	}
}

// TestDemoInterrupted: SIGINT (the command's context ending) during the
// demo prints the figures so far and says no verdict was computed, in one
// short line: it used to report "did not settle within 3m0s" after a few
// seconds, followed by every pending order.
func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(2*time.Second, cancel)
	var out, errb bytes.Buffer
	code := run(ctx, []string{"demo", "--orders", "100000"}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "verdict: not computed (interrupted") || strings.Contains(out.String(), "verdict: FAIL") {
		t.Errorf("stdout:\n%s", out.String())
	}
	if s := errb.String(); strings.Contains(s, "did not settle") || strings.Count(s, "\n") != 1 || len(s) > 200 {
		t.Errorf("stderr should be one short line, got %d bytes:\n%s", len(s), s)
	}
}
