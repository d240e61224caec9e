package kafkabroker

import (
	"errors"
	"testing"

	"github.com/eventkit/eventkit/broker"
)

// TestRetryTopicsAreNotUserTopics: a retry topic name can never be a topic
// Publish or Subscribe accepts, so no (topic, group) pair shares a user's
// topic or another pair's retry topic.
func TestRetryTopicsAreNotUserTopics(t *testing.T) {
	for _, p := range [][2]string{{"a.retry.b", "c"}, {"a", "b.retry.c"}, {"a.retry", "retry.g"}, {"a", "retry.retry.g"}} {
		rt := DefaultRetryTopic(p[0], p[1])
		if err := CheckTopic(rt); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("CheckTopic(retry topic %q of %v) = %v, want ErrInvalidTopic", rt, p, err)
		}
	}
	for _, topic := range []string{"a.retry.b", "a.retry"} {
		if err := CheckTopic(topic); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("CheckTopic(%q) = %v, want ErrInvalidTopic", topic, err)
		}
	}
	for _, topic := range []string{"orders", "orders.retryable", "retry.orders", "orders_retry"} {
		if err := CheckTopic(topic); err != nil {
			t.Errorf("CheckTopic(%q) = %v", topic, err)
		}
	}
}
