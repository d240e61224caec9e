package rabbitmqbroker_test

import (
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
)

// TestQueueNamesAreDistinct: group queues and retry queues of distinct
// (topic, group) pairs never share a name.
func TestQueueNamesAreDistinct(t *testing.T) {
	seen := map[string]string{}
	add := func(name, what string) {
		t.Helper()
		if prev, ok := seen[name]; ok {
			t.Errorf("%s and %s both use queue %q", prev, what, name)
		}
		seen[name] = what
	}
	for _, p := range [][2]string{{"a.b", "c"}, {"a", "b.c"}, {"a.g.retry", "1000"}, {"a", "g"}, {"a.g", "retry.1000"}, {"a", "g.retry.1000"}} {
		q := rabbitmqbroker.QueueName(p[0], p[1])
		add(q, "group "+p[1]+" of "+p[0])
		add(rabbitmqbroker.RetryQueueName(q, time.Second), "retry queue of "+q)
	}
	if got := rabbitmqbroker.QueueName("orders", "billing"); got != "orders.billing" {
		t.Errorf("QueueName(orders, billing) = %q: a group without a dot keeps its queue name", got)
	}
}
