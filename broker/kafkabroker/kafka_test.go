package kafkabroker

import (
	"context"
	"flag"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	"github.com/eventkit/eventkit/internal/testenv"
)

func TestMain(m *testing.M) {
	// Most tests wait on rebalances, ack waits and delays rather than use
	// the CPU: unless -parallel is given, run more of them at once than
	// the default GOMAXPROCS (2 on the test machine).
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "6")
	}
	goleak.VerifyTestMain(m)
}

// newCluster starts an in-process Kafka (franz-go's kfake, which speaks the
// real protocol) of n brokers, closed when the test ends.
func newCluster(t testing.TB, n int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testOptions are short timings for tests.
func testOptions(c *kfake.Cluster) Options {
	return Options{
		Brokers:           c.ListenAddrs(),
		SessionTimeout:    10 * time.Second, // members leave on Close; a short session only adds rebalances under load
		HeartbeatInterval: 100 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		CommitInterval:    100 * time.Millisecond,
		FetchMaxWait:      200 * time.Millisecond,
		RevokeWait:        2 * time.Second,
	}
}

func newBroker(t testing.TB, opts Options) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitAssigned waits until sub owns at least one partition of its topic.
func waitAssigned(t testing.TB, sub broker.Subscription) {
	t.Helper()
	s := sub.(*Subscription)
	testenv.WaitFor(t, 20*time.Second, "the subscription to get partitions", func() bool { return len(s.Assigned()) > 0 })
}

func TestConformance(t *testing.T) {
	c := newCluster(t, 3)
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(raw.Close)
	admin := newBroker(t, testOptions(c))
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	publishRaw := func(topic string, h map[string]string, body []byte) error {
		if err := admin.EnsureTopic(context.Background(), topic); err != nil {
			return err
		}
		r := &kgo.Record{Topic: topic, Value: body}
		for k, v := range h {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		return raw.ProduceSync(context.Background(), r).FirstErr()
	}
	brokertest.Run(t, brokertest.Config{
		New:              func(t *testing.T) broker.Broker { return newBroker(t, testOptions(c)) },
		DurableCheckedBy: "TestConformanceDurable",
		PublishRaw: func(t *testing.T, topic string, h map[string]string, body []byte) error {
			return publishRaw(topic, h, body)
		},
		Limited: func(t *testing.T, limit int) (broker.Broker, func(string, map[string]string, []byte) error) {
			opts := testOptions(c)
			opts.MaxMessageBytes = limit
			return newBroker(t, opts), func(topic string, h map[string]string, body []byte) error {
				return publishRaw(topic, h, body)
			}
		},
		Settle: func(t *testing.T, sub broker.Subscription) { waitAssigned(t, sub) },
	})
}

// TestConformanceDurable runs brokertest.RunDurable on a one-broker kfake
// cluster that writes its log and group commits to a directory (DataDir,
// with SyncWrites), closed and started again on the same directory and
// port.
func TestConformanceDurable(t *testing.T) {
	dir := t.TempDir()
	start := func(port int) *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SyncWrites(),
			kfake.GroupMinSessionTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start(0)
	t.Cleanup(func() { c.Close() })
	addr := c.ListenAddrs()[0]
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	brokertest.RunDurable(t, brokertest.Config{
		New:    func(t *testing.T) broker.Broker { return newBroker(t, testOptions(c)) },
		Settle: func(t *testing.T, sub broker.Subscription) { waitAssigned(t, sub) },
		Restart: func(t *testing.T) {
			c.Close()
			c = start(port)
		},
	})
}
