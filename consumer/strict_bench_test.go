package consumer_test

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/consumer"
	"github.com/eventkit/eventkit/inbox/sqlinbox"
	"github.com/eventkit/eventkit/internal/testenv"
)

// BenchmarkStrictOrder compares, in one run, consume throughput on NATS
// JetStream and Kafka (kfake) of the raw adapter subscription (AutoAck, no
// database), the runtime in best-effort order (OrderedBySubject) and in
// strict order (StrictOrder), both at concurrency 8 with the Postgres
// inbox (database/sql), over 100 subjects whose events carry their subject
// sequence in publish order, as a relay publishes them. It reports
// events/s and this process's CPU time per event.
//
//	go test -run '^$' -bench 'StrictOrder' -benchtime 5000x -count 3 ./consumer
func BenchmarkStrictOrder(b *testing.B) {
	for _, sb := range []strictBroker{strictBrokers[1], strictBrokers[4]} {
		b.Run(sb.name, func(b *testing.B) {
			b.Run("raw-broker", func(b *testing.B) {
				conn, topic := sb.setup(b, "raw")
				br := conn()
				prepublishSeq(b, br, topic)
				cpu := cpuTime()
				b.ResetTimer()
				rawConsume(b, br, topic)
				reportCPU(b, cpu)
			})
			for _, mode := range []string{"best-effort", "strict"} {
				b.Run(mode, func(b *testing.B) {
					group := "bench"
					conn, topic := sb.setup(b, group)
					br := conn()
					st := sqlStore(b, "postgres", "pgx", testenv.Postgres.URL(b), sqlinbox.Postgres)
					cfg := consumer.Config{Concurrency: 8, Logger: quietLogger(), Inbox: st.in, OrderedBySubject: mode == "best-effort", StrictOrder: mode == "strict"}
					c, err := consumer.New(br, cfg)
					if err != nil {
						b.Fatal(err)
					}
					_ = c.HandleFunc(topic, group, func(ctx context.Context, e eventkit.Event) error { return nil })
					prepublishSeq(b, br, topic)
					ctx, cancel := context.WithCancel(context.Background())
					runDone := make(chan error, 1)
					cpu := cpuTime()
					b.ResetTimer()
					go func() { runDone <- c.Run(ctx) }()
					for c.Stats().Handled < uint64(b.N) {
						time.Sleep(100 * time.Microsecond)
					}
					b.StopTimer()
					reportCPU(b, cpu)
					b.ReportMetric(float64(c.Stats().Early)/float64(b.N), "early/event")
					cancel()
					if err := <-runDone; err != nil {
						b.Fatal(err)
					}
				})
			}
		})
	}
}

// prepublishSeq publishes b.N events over 100 subjects, each carrying its
// subject sequence number, in sequence order.
func prepublishSeq(b *testing.B, p broker.Publisher, topic string) {
	b.Helper()
	const batch, subjects = 1000, 100
	evs := make([]eventkit.Event, 0, batch)
	for i := range b.N {
		evs = append(evs, eventkit.New("bench.event", "application/json", []byte(`{"n":1}`),
			eventkit.WithSubject(fmt.Sprint("s", i%subjects)),
			eventkit.WithExtension(eventkit.SubjectSeqExtension, strconv.Itoa(i/subjects+1))))
		if len(evs) == batch || i == b.N-1 {
			publish(b, p, topic, evs...)
			evs = evs[:0]
		}
	}
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	report(b)
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/event")
}
