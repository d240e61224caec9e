package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/eventkit/eventkit"

var programs = []string{"orders", "inventory", "notifications"}

// TestExamplesImportOnlyPublicPackages lists every package the example
// programs build from (go list -deps) and fails if one under examples/
// imports an internal package: the programs and the example code they share
// must be copyable out of this repository.
func TestExamplesImportOnlyPublicPackages(t *testing.T) {
	args := []string{"list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`}
	for _, p := range programs {
		args = append(args, "./"+p)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], module+"/examples/") {
			continue
		}
		checked++
		for _, imp := range f[1:] {
			if isInternal(imp) {
				t.Errorf("%s imports %s", f[0], imp)
			}
		}
	}
	if checked < len(programs) {
		t.Fatalf("checked %d example packages, want at least %d:\n%s", checked, len(programs), out)
	}
}

func isInternal(path string) bool {
	return strings.HasSuffix(path, "/internal") || strings.Contains(path, "/internal/") || strings.HasPrefix(path, "internal/")
}

// TestExampleBuildsOutsideTheModule copies the orders program into a module
// of its own, which requires eventkit (replaced by this checkout), and builds
// it: the Go toolchain refuses an internal import across modules, so this
// is what a user who copies the directory gets.
func TestExampleBuildsOutsideTheModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a copy of an example (-short)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src, err := os.ReadFile("orders/main.go")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	rootMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	// eventkit's own requirements pin the same versions as this checkout
	// (a user's go get would add them the same way).
	gomod := strings.Replace(string(rootMod), "module "+module+"\n", "module example.com/orders\n", 1) +
		"\nrequire " + module + " v0.0.0\n\nreplace " + module + " => " + root + "\n"
	for name, data := range map[string][]byte{"main.go": src, "go.sum": sum, "go.mod": []byte(gomod)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		// Only the module cache: the copy needs nothing this module does not.
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("build", "-o", filepath.Join(dir, "orders.bin"), ".")
}
