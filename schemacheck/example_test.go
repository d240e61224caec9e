package schemacheck_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/schemacheck"
)

type CustomerCreated struct {
	Name string `json:"name"`
}

// The same Go type, a release later: a field renamed in place.
type CustomerCreatedRenamed struct {
	FullName string `json:"full_name"`
}

// Example runs what a small program in your repository does with your
// registry (see docs/schema.md): snapshot once and commit the lock file,
// then check in CI. Renaming a field without raising the version fails the
// check, one line per finding, exit status 1.
func Example() {
	dir, err := os.MkdirTemp("", "schemacheck-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	lock := filepath.Join(dir, "eventkit.schema.json")

	v1 := eventkit.NewRegistry()
	eventkit.MustRegister[CustomerCreated](v1, "customer.created", "1", eventkit.JSON)
	fmt.Println("snapshot: exit", schemacheck.Main(v1, []string{"snapshot", "--lock", lock}, io.Discard, os.Stderr))
	fmt.Println("check: exit", schemacheck.Main(v1, []string{"check", "--lock", lock}, io.Discard, os.Stderr))

	next := eventkit.NewRegistry()
	eventkit.MustRegister[CustomerCreatedRenamed](next, "customer.created", "1", eventkit.JSON)
	fmt.Println("check: exit", schemacheck.Main(next, []string{"check", "--lock", lock}, os.Stdout, io.Discard))
	// Output:
	// snapshot: exit 0
	// check: exit 0
	// customer.created version 1: name: JSON_PROPERTY_NO_DELETE: property deleted (readers of the old type lose it; keep it, or raise the version)
	// customer.created version 1: full_name: JSON_REQUIRED_NO_ADD: a new required property (old events lack it; add it with omitempty or omitzero)
	// check: exit 1
}

// ExampleCompare uses the library directly: the lock file of version 1,
// and a registry that adds version 2 with an upcaster, which passes.
func ExampleCompare() {
	old := eventkit.NewRegistry()
	eventkit.MustRegister[CustomerCreated](old, "customer.created", "1", eventkit.JSON)
	lock, err := schemacheck.Snapshot(old)
	if err != nil {
		panic(err)
	}

	cur := eventkit.NewRegistry()
	eventkit.MustRegister[CustomerCreated](cur, "customer.created", "1", eventkit.JSON)
	eventkit.MustRegister[CustomerCreatedRenamed](cur, "customer.created", "2", eventkit.JSON)
	if err := eventkit.RegisterUpcaster(cur, "customer.created", "1", "2", func(v CustomerCreated) (CustomerCreatedRenamed, error) {
		return CustomerCreatedRenamed{FullName: v.Name}, nil
	}); err != nil {
		panic(err)
	}
	now, err := schemacheck.Snapshot(cur)
	if err != nil {
		panic(err)
	}
	r := schemacheck.Compare(lock, now, schemacheck.CompareOptions{RequireUpcaster: true})
	fmt.Println("ok:", r.OK())
	for _, n := range r.Notes {
		fmt.Println(n)
	}
	// Output:
	// ok: true
	// customer.created version 2: breaks version 1 (JSON_PROPERTY_NO_DELETE, JSON_REQUIRED_NO_ADD), accepted: the version was raised and an upcaster leads from 1 to 2
}
