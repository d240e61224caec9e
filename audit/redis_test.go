package audit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventkit/eventkit/audit"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// TestRedis plants the faults of TestNATS in a real Redis stream (the
// deleted message with XDEL).
func TestRedis(t *testing.T) {
	e := newEnv(t)
	b, err := redisbroker.New(context.Background(), redisbroker.Options{URL: testenv.Redis.URL(t), Prefix: testenv.Name("ekt-audit") + ":"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.DeleteTopic(context.Background(), e.topic)
		_ = b.Close(context.Background())
	})
	s := audit.Redis(b)
	plantFaults(t, e, s, b, func(pos uint64) error {
		msgs, err := b.Client().XRange(e.ctx, b.StreamKey(e.topic), "-", "+").Result()
		if err != nil {
			return err
		}
		return b.Client().XDel(e.ctx, b.StreamKey(e.topic), msgs[pos-1].ID).Err()
	})
	if _, err := audit.Run(e.ctx, audit.Config{DB: e.st.SQL, Dialect: e.st.Dialect, Stream: s, Topic: testenv.Name("nosuch")}); !errors.Is(err, audit.ErrNoTopic) {
		t.Fatalf("missing stream: %v, want ErrNoTopic", err)
	}
}
