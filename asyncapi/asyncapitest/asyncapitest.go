// Package asyncapitest checks AsyncAPI documents with the official AsyncAPI
// parser (@asyncapi/parser from npm, run with the machine's Node.js), for
// tests: Validate fails the test on any diagnostic of severity error, so a
// document that passes is one that AsyncAPI tooling (generators, Studio)
// accepts.
//
// The parser is installed once with npm into a directory under
// os.UserCacheDir() (eventkit/asyncapi-parser-VERSION) and reused by later
// runs. Without node or npm, or when the install fails, the test is skipped
// with the reason; with CI set in the environment (any value, as in every eventkit test) it fails instead, so CI
// cannot pass without having run the parser.
package asyncapitest

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ParserVersion is the @asyncapi/parser release the documents are checked with.
const ParserVersion = "3.6.6"

//go:embed validate.cjs
var script []byte

// A Diagnostic is one finding of the parser.
type Diagnostic struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Path    string `json:"path"` // JSON path of the offending node, "/"-separated
}

func (d Diagnostic) String() string { return fmt.Sprintf("%s at %q: %s", d.Code, d.Path, d.Message) }

// Result is what the parser said about one document.
type Result struct {
	Parsed   bool         `json:"parsed"`   // the parser produced a document
	Errors   []Diagnostic `json:"errors"`   // severity error
	Warnings []Diagnostic `json:"warnings"` // every other severity
}

// Validate parses each document (JSON or YAML) and fails t unless the
// parser produced a document without a diagnostic of severity error from
// every one. All documents are checked in one run of node.
func Validate(t testing.TB, docs ...[]byte) []Result {
	t.Helper()
	rs := Parse(t, docs...)
	for i, r := range rs {
		if !r.Parsed || len(r.Errors) > 0 {
			var b strings.Builder
			for _, d := range r.Errors {
				b.WriteString("\n\t" + d.String())
			}
			t.Fatalf("the AsyncAPI parser rejects document %d (parsed: %v):%s", i, r.Parsed, b.String())
		}
	}
	return rs
}

// Parse parses each document with the official parser, in one run of node,
// and returns the findings in order; it fails t only if the parser cannot
// be run (or skips t, outside CI).
func Parse(t testing.TB, docs ...[]byte) []Result {
	t.Helper()
	dir := parserDir(t)
	tmp := t.TempDir()
	args := []string{writeScript(t, tmp)}
	for i, doc := range docs {
		file := filepath.Join(tmp, fmt.Sprintf("doc%d", i))
		if err := os.WriteFile(file, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, file)
	}
	return decodeLines[Result](t, runNode(t, dir, args...), len(docs))
}

// An Instance is a JSON value to check against a JSON Schema.
type Instance struct {
	Schema json.RawMessage `json:"schema"`
	Value  json.RawMessage `json:"instance"`
}

// A Verdict says whether an Instance conforms, and why not.
type Verdict struct {
	Valid  bool     `json:"valid"`
	Errors []string `json:"errors"`
}

// Conforms checks each instance against its schema with Ajv (the validator
// the parser uses, with the standard formats), in one run of node, and
// returns the verdicts in order. It fails t if the validator cannot be run
// (or skips t, outside CI).
func Conforms(t testing.TB, cases ...Instance) []Verdict {
	t.Helper()
	dir := parserDir(t)
	tmp := t.TempDir()
	js := writeScript(t, tmp)
	b, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(tmp, "instances.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return decodeLines[Verdict](t, runNode(t, dir, js, "--instances", file), len(cases))
}

func writeScript(t testing.TB, dir string) string {
	t.Helper()
	js := filepath.Join(dir, "validate.cjs")
	if err := os.WriteFile(js, script, 0o600); err != nil {
		t.Fatal(err)
	}
	return js
}

func decodeLines[T any](t testing.TB, out []byte, n int) []T {
	t.Helper()
	var rs []T
	for line := range bytes.Lines(out) {
		var r T
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("read node's output: %v\n%s", err, out)
		}
		rs = append(rs, r)
	}
	if len(rs) != n {
		t.Fatalf("node gave %d results for %d inputs:\n%s", len(rs), n, out)
	}
	return rs
}

// runNode runs node with the parser's modules on NODE_PATH and returns its
// stdout; exit status 1 (findings) is not an error.
func runNode(t testing.TB, dir string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("run node %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return bytes.TrimSpace(stdout.Bytes())
}

var install struct {
	sync.Mutex
	dir string
}

// unavailable skips t, or fails it in CI.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: the AsyncAPI parser check must run; install Node.js 18+ and npm)", msg)
	}
	t.Skipf("%s: skipping the AsyncAPI parser check (install Node.js 18+ and npm to run it)", msg)
}

// parserDir returns the cached install of the parser, installing it first
// if needed.
func parserDir(t testing.TB) string {
	t.Helper()
	install.Lock()
	defer install.Unlock()
	if install.dir != "" {
		return install.dir
	}
	if _, err := exec.LookPath("node"); err != nil {
		unavailable(t, "node not found")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "eventkit", "asyncapi-parser-"+ParserVersion)
	marker := filepath.Join(dir, "node_modules", "@asyncapi", "parser", "package.json")
	if _, err := os.Stat(marker); err == nil {
		install.dir = dir
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		unavailable(t, "npm not found")
	}
	// Install into a fresh directory and rename it into place, so that a
	// concurrent run (another test binary) never sees half an install.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), []byte(`{"private": true}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
		"--prefix", tmp, "@asyncapi/parser@"+ParserVersion)
	out, err := cmd.CombinedOutput()
	if err != nil {
		unavailable(t, "npm install @asyncapi/parser@%s: %v\n%s", ParserVersion, err, out)
	}
	if _, err := os.Stat(marker); err == nil { // another run installed it meanwhile
		install.dir = dir
		return dir
	}
	os.RemoveAll(dir) // a broken earlier install (the marker is missing)
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(marker); serr != nil {
			t.Fatalf("install the AsyncAPI parser into %s: %v", dir, err)
		}
		// Another run installed it first.
	}
	install.dir = dir
	return dir
}
