package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	info := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/eventkit/eventkit", Version: "v0.3.1"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := buildVersion(info, true)
	for _, want := range []string{"v0.3.1", "revision 0123456789ab", "modified", "2026-12-01T10:00:00Z", "go1.26.8"} {
		if !strings.Contains(got, want) {
			t.Errorf("buildVersion = %q, want it to contain %q", got, want)
		}
	}
	if got := buildVersion(nil, false); !strings.HasPrefix(got, "dev ") {
		t.Errorf("without build info: %q, want the ldflags default first", got)
	}
}

func TestVersionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "eventkit ") {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	if code := run(t.Context(), []string{"--version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
}
