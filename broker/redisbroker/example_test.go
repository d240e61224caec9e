package redisbroker_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// Publish an event to a topic and consume it in a group. It needs a Redis
// server (EVENTKIT_REDIS_URL, default redis://127.0.0.1:6379/0).
func Example() {
	ctx := context.Background()
	url := os.Getenv(testenv.Redis.EnvVar)
	if url == "" {
		url = testenv.Redis.Default
	}
	b, err := redisbroker.New(ctx, redisbroker.Options{URL: url, Prefix: testenv.Name("ekt-example") + ":"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(ctx)
	topic := "orders"
	defer b.Client().Del(ctx, b.StreamKey(topic))

	got := make(chan string, 1)
	sub, err := b.Subscribe(ctx, topic, "billing", broker.AutoAck(func(ctx context.Context, e eventkit.Event, attempt int) error {
		got <- fmt.Sprintf("%s %s attempt %d", e.Type, e.Data, attempt)
		return nil
	}), broker.WithAckWait(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close(ctx)

	ev := eventkit.New("order.created", "application/json", []byte(`{"id":"o-1"}`), eventkit.WithSubject("o-1"))
	if err := b.Publish(ctx, topic, ev); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-got)
	// Output: order.created {"id":"o-1"} attempt 1
}
