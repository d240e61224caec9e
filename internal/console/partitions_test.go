package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/internal/console"
	"github.com/eventkit/eventkit/internal/testenv/testdb"
	"github.com/eventkit/eventkit/outbox"
)

// TestOverviewPartitionLeaders: on a partitioned outbox the overview shows
// which relay instance leads which partitions (from the lease table), the
// standbys and the partitions without a leader, instead of the advisory
// lock a partitioned outbox does not use.
func TestOverviewPartitionLeaders(t *testing.T) {
	ctx := context.Background()
	st, err := connect.OpenStore(ctx, testdb.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ps, ok := st.Outbox.(interface {
		outbox.Partitioned
		SetPartitions(context.Context, int) error
		Migrate(context.Context) error
	})
	if !ok {
		t.Fatalf("%T is not partitioned", st.Outbox)
	}
	if err := ps.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ps.SetPartitions(ctx, 3); err != nil {
		t.Fatal(err)
	}
	ls := ps.Leases()
	for _, in := range []string{"relay-a", "relay-b"} {
		if _, err := ls.Join(ctx, in, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []int{0, 2} {
		if ok, err := ls.Acquire(ctx, "relay-a", p, time.Minute); err != nil || !ok {
			t.Fatalf("acquire %d: %v %v", p, ok, err)
		}
	}
	con, err := console.New(console.Config{DB: st.SQL, Dialect: st.Dialect, Outbox: st.Outbox, Pool: st.Pool})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", newServer(t, con)+"/", nil)
	_, body := get(t, req)
	for _, want := range []string{
		"3 partitions, 2 relays alive, 1 not led",
		"<td>relay-a</td><td>0, 2</td>",
		"<td>relay-b</td><td>none (standby)</td>",
		`<td class="error">no leader</td><td>1</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview has no %q", want)
		}
	}
	if strings.Contains(body, "leadership lock") {
		t.Error("the advisory-lock leader line is shown for a partitioned outbox")
	}
	if t.Failed() {
		t.Log(body)
	}
}
