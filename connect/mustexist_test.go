package connect_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/eventkit/eventkit/connect"
)

// TestMustExist: with MustExist a missing SQLite file is an error wrapping
// fs.ErrNotExist and no file is created; an existing one opens.
func TestMustExist(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "typo.db")
	if _, err := connect.OpenStore(ctx, "sqlite://"+path, connect.MustExist()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("OpenStore with MustExist created the file")
	}
	st, err := connect.OpenStore(ctx, "sqlite://"+path) // creates it
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = connect.OpenStore(ctx, "sqlite://"+path, connect.MustExist())
	if err != nil {
		t.Fatalf("existing file: %v", err)
	}
	st.Close()
}
