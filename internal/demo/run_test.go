package demo_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker/memorybroker"
	"github.com/eventkit/eventkit/broker/natsbroker/natsembed"
	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/examples/shop"
	"github.com/eventkit/eventkit/internal/demo"
)

func stores(t *testing.T, dir string) map[string]*connect.Store {
	ctx := context.Background()
	m := map[string]*connect.Store{}
	for _, svc := range []string{demo.SvcOrders, demo.SvcInventory, demo.SvcNotifications, demo.SvcOps} {
		st, err := connect.OpenStore(ctx, "sqlite://"+filepath.Join(dir, svc+".db"), connect.WithOutboxTable(shop.OutboxTable(svc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		m[svc] = st
	}
	return m
}

// TestRunDebeziumRelayFormat runs the demo, faults on, on the embedded NATS
// JetStream with the relays publishing as Debezium Server's NATS JetStream
// sink would (debezium.Publisher) and the consumers reading through
// debezium.Wrap: the verdict passes (every order decided once, notified
// once, the poison event dead-lettered, duplicates dropped by the inboxes).
// Then it reads the messages at the broker as they are: every one on the
// orders topic is Debezium-shaped (the router's "id" header JSON-encoded,
// no CloudEvents ce- header, not decodable as a CloudEvent, decodable by
// the demo's debezium.Format).
func TestRunDebeziumRelayFormat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	emb, err := natsembed.Start(ctx, filepath.Join(dir, "nats"), natsembed.Options{InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close(context.Background())
	topics := shop.Topics{Orders: "demo.orders", Inventory: "demo.inventory"}
	sum, err := demo.Run(ctx, demo.Config{Orders: 100, Broker: emb.Broker, Stores: stores(t, dir), Faults: true,
		Topics: topics, RelayFormat: demo.RelayDebezium, Timeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.OK() || sum.Verdict.Confirmed+sum.Verdict.Cancelled != 100 || !sum.PoisonInDLQ || sum.Duplicates == 0 {
		t.Fatalf("verdict %+v (duplicates %d, poison in DLQ %v)", sum.Verdict, sum.Duplicates, sum.PoisonInDLQ)
	}

	f := demo.DebeziumFormat(emb.Broker)
	js := emb.Broker.JetStream()
	st, err := js.Stream(ctx, emb.Broker.StreamName(topics.Orders))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < 100 {
		t.Fatalf("%d messages on %s, want at least the 100 order.created", info.State.Msgs, topics.Orders)
	}
	created := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		hs := map[string]string{}
		for k, v := range m.Header {
			if len(v) > 0 {
				hs[k] = v[0]
			}
			if strings.HasPrefix(strings.ToLower(k), "ce-") {
				t.Fatalf("message %d has the CloudEvents header %s: %v", seq, k, m.Header)
			}
		}
		if _, err := eventkit.NATSBinding.Decode(eventkit.MapHeaders(hs), "", m.Data); err == nil {
			t.Fatalf("message %d decodes as a CloudEvent: %v", seq, m.Header)
		}
		if id := hs["id"]; len(id) < 3 || id[0] != '"' {
			t.Fatalf("message %d: header id %q, want the router's JSON-encoded id", seq, id)
		}
		ev, err := f.DecodeHeaders(hs, m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if ev.Type == shop.TypeOrderCreated && ev.Subject != "ord-poison" {
			if _, _, err := eventkit.SubjectSeq(ev); err != nil || ev.Extensions[eventkit.SubjectSeqExtension] == "" {
				t.Fatalf("message %d: no subjectseq: %v", seq, ev.Extensions)
			}
			created++
		}
	}
	if created < 100 {
		t.Fatalf("%d order.created messages, want at least 100", created)
	}
}

// TestRunRelayFormatUnknown: an unknown relay format is an error before
// anything runs.
func TestRunRelayFormatUnknown(t *testing.T) {
	ctx := context.Background()
	mem := memorybroker.New(memorybroker.Options{})
	defer mem.Close(ctx)
	_, err := demo.Run(ctx, demo.Config{Orders: 1, Broker: mem, Stores: stores(t, t.TempDir()), RelayFormat: "avro"})
	if err == nil || !strings.Contains(err.Error(), "unknown relay format") {
		t.Errorf("relay format avro: %v, want an unknown relay format error", err)
	}
}
