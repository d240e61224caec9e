package eventkit_test

import (
	"bufio"
	"context"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// snippet is one ```go block of the documentation.
type snippet struct {
	file string
	line int
	code string
	want string // from a <!-- run: prints "..." --> line before the fence
}

var runMarker = regexp.MustCompile(`^<!--\s*run:\s*prints\s*"([^"]*)"\s*-->$`)

func docSnippets(t *testing.T) []snippet {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.md", "docs/*.md", "examples/*.md", "bench/*/*.md"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var out []snippet
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var cur *snippet
		prev := ""
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			switch {
			case cur == nil && strings.TrimSpace(line) == "```go":
				cur = &snippet{file: f, line: n}
				if m := runMarker.FindStringSubmatch(strings.TrimSpace(prev)); m != nil {
					cur.want = m[1]
				}
			case cur != nil && strings.TrimSpace(line) == "```":
				out = append(out, *cur)
				cur = nil
			case cur != nil:
				cur.code += line + "\n"
			}
			prev = line
		}
		if cur != nil {
			t.Errorf("%s:%d: unterminated ```go block", cur.file, cur.line)
		}
	}
	return out
}

// TestDocSnippetsCompile builds every Go block of README.md and docs/ as
// the program a user would paste: each must be a whole file that compiles
// against this module, and a block marked <!-- run: prints "..." --> is run
// and must print that text. A snippet that does not compile, or silently
// does nothing, fails here before a user finds it.
func TestDocSnippetsCompile(t *testing.T) {
	snips := docSnippets(t)
	if len(snips) == 0 {
		t.Fatal("no ```go blocks found in README.md and docs/: the extractor is broken")
	}
	if testing.Short() {
		t.Skip("builds every documentation snippet (minutes): not in -short")
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	var uses, pkgs []string
	for i, s := range snips {
		where := fmt.Sprintf("%s:%d", s.file, s.line)
		if _, err := parser.ParseFile(token.NewFileSet(), where, s.code, parser.PackageClauseOnly); err != nil {
			t.Errorf("%s: a Go block must be a whole file a user can paste and build (package clause, imports, code): %v", where, err)
			continue
		}
		mod := fmt.Sprintf("snippet%d", i)
		dir := filepath.Join(work, mod)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		header := fmt.Sprintf("// Code from %s. DO NOT EDIT.\n\n", where)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(header+s.code), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+mod+"\n\ngo 1.26.0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		uses = append(uses, "\t./"+mod)
		pkgs = append(pkgs, mod)
	}
	if len(pkgs) == 0 {
		return
	}
	gowork := "go 1.26.0\n\nuse (\n\t" + root + "\n" + strings.Join(uses, "\n") + "\n)\n"
	if err := os.WriteFile(filepath.Join(work, "go.work"), []byte(gowork), 0o644); err != nil {
		t.Fatal(err)
	}
	gocmd := func(ctx context.Context, dir string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(work, "go.work"), "GOFLAGS=-buildvcs=false")
		return cmd
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// go vet type-checks every snippet (and vets it) in one command.
	if out, err := gocmd(ctx, work, append([]string{"vet"}, pkgs...)...).CombinedOutput(); err != nil {
		t.Fatalf("documentation snippets do not compile:\n%s", out)
	}
	for i, s := range snips {
		if s.want == "" {
			continue
		}
		where := fmt.Sprintf("%s:%d", s.file, s.line)
		out, err := gocmd(ctx, filepath.Join(work, fmt.Sprintf("snippet%d", i)), "run", ".").CombinedOutput()
		if err != nil {
			t.Errorf("%s: go run: %v\n%s", where, err, out)
			continue
		}
		if !strings.Contains(string(out), s.want) {
			t.Errorf("%s: the program printed\n%s\nwant it to print %q", where, out, s.want)
		}
	}
}
