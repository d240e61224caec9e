package redis_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	redisbroker "github.com/eventkit/eventkit/broker/redis"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's view of the server: a key prefix of its own, deleted
// with everything under it when the test ends.
type env struct {
	url    string
	prefix string
	raw    *goredis.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	url := testenv.Redis.URL(t)
	o, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{url: url, prefix: testenv.Name("ekt-test") + ":", raw: goredis.NewClient(o)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := e.raw.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = e.raw.Del(ctx, keys...).Err()
		}
		_ = e.raw.Close()
	})
	return e
}

func (e *env) broker(t *testing.T, o redisbroker.Options) *redisbroker.Broker {
	t.Helper()
	if o.URL == "" && o.Client == nil {
		o.URL = e.url
	}
	o.Prefix = e.prefix
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// xadd adds a raw entry as another tool (redis-cli XADD) would.
func (e *env) xadd(t *testing.T, topic string, fields ...any) {
	t.Helper()
	if err := e.raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + topic, Values: fields}).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	brokertest.Run(t, brokertest.Config{
		New: func(t *testing.T) broker.Broker { return e.broker(t, redisbroker.Options{}) },
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			vals := []any{}
			for k, v := range h {
				vals = append(vals, k, v)
			}
			vals = append(vals, redisbroker.DataField, body)
			return e.raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: e.prefix + topic, Values: vals}).Err()
		},
	})
}
