package debezium_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/debezium"
)

// fixture is one message of testdata/router_outputs.json: what the outbox
// event router (and the converters, and Debezium Server's sinks) emit for
// an outbox row, built from Debezium's documentation and EventRouterTest's
// expectations ("from" names the source), and the event it must decode to
// (or the error).
type fixture struct {
	Name        string          `json:"name"`
	From        string          `json:"from"`
	Sink        string          `json:"sink"` // "" (Kafka record), "headers" (NATS, RabbitMQ), "redis"
	Format      debezium.Format `json:"format"`
	Topic       string          `json:"topic"`
	Key         *string         `json:"key"`
	Value       *string         `json:"value"`
	ValueBase64 string          `json:"value_base64"`
	Headers     [][2]string     `json:"headers"`
	TimestampMs int64           `json:"timestamp_ms"`
	Want        *struct {
		ID              string            `json:"id"`
		Type            string            `json:"type"`
		Source          string            `json:"source"`
		Subject         string            `json:"subject"`
		Time            time.Time         `json:"time"`
		DataVersion     string            `json:"dataversion"`
		DataContentType string            `json:"datacontenttype"`
		DataSchema      string            `json:"dataschema"`
		Data            *string           `json:"data"`
		DataBase64      string            `json:"data_base64"`
		DataJSON        json.RawMessage   `json:"data_json"`
		Extensions      map[string]string `json:"extensions"`
	} `json:"want"`
	Error string `json:"error"`
}

func loadFixtures(t testing.TB) []fixture {
	b, err := os.ReadFile("testdata/router_outputs.json")
	if err != nil {
		t.Fatal(err)
	}
	var fs []fixture
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

func (fx fixture) value(t testing.TB) []byte {
	switch {
	case fx.ValueBase64 != "":
		b, err := base64.StdEncoding.DecodeString(fx.ValueBase64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case fx.Value != nil:
		return []byte(*fx.Value)
	}
	return nil
}

func (fx fixture) decode(t testing.TB) (eventkit.Event, error) {
	switch fx.Sink {
	case "":
		r := &kgo.Record{Topic: fx.Topic, Value: fx.value(t)}
		if fx.Key != nil {
			r.Key = []byte(*fx.Key)
		}
		if fx.TimestampMs != 0 {
			r.Timestamp = time.UnixMilli(fx.TimestampMs)
		}
		for _, h := range fx.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
		}
		return fx.Format.DecodeRecord(r)
	case "headers":
		m := map[string]string{}
		for _, h := range fx.Headers {
			m[h[0]] = h[1]
		}
		return fx.Format.DecodeHeaders(m, fx.value(t))
	case "redis":
		m := map[string]string{}
		for _, h := range fx.Headers {
			m[h[0]] = h[1]
		}
		return fx.Format.DecodeRedis(m)
	}
	t.Fatalf("unknown sink %q", fx.Sink)
	return eventkit.Event{}, nil
}

// TestRouterOutputs decodes every fixture: the router's default options,
// the expanded JSON payload, additional fields as headers and in the
// envelope, a custom route topic, the JSON converter with and without
// schemas, Debezium Server's NATS JetStream, RabbitMQ and Redis sinks, and
// malformed messages (one DecodeError each, keeping the value).
func TestRouterOutputs(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(fx.Name, func(t *testing.T) {
			got, err := fx.decode(t)
			if fx.Error != "" {
				var de *eventkit.DecodeError
				if !errors.As(err, &de) || !errors.Is(err, eventkit.ErrDecode) {
					t.Fatalf("err = %v (%T), want a *eventkit.DecodeError", err, err)
				}
				if !strings.Contains(err.Error(), fx.Error) {
					t.Errorf("err = %v, want it to mention %q", err, fx.Error)
				}
				if v := fx.value(t); fx.Sink != "redis" && !bytes.Equal(de.Raw, v) {
					t.Errorf("DecodeError.Raw = %q, want the value %q", de.Raw, v)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v (fixture from %s)", err, fx.From)
			}
			w := fx.Want
			want := eventkit.Event{ID: w.ID, Type: w.Type, Source: w.Source, Subject: w.Subject, Time: w.Time,
				DataVersion: w.DataVersion, DataContentType: w.DataContentType, DataSchema: w.DataSchema, Extensions: w.Extensions}
			switch {
			case w.Data != nil:
				want.Data = []byte(*w.Data)
			case w.DataBase64 != "":
				want.Data, _ = base64.StdEncoding.DecodeString(w.DataBase64)
			case w.DataJSON != nil:
				var a, b any
				if err := json.Unmarshal(got.Data, &a); err != nil {
					t.Fatalf("data %q is not JSON: %v", got.Data, err)
				}
				_ = json.Unmarshal(w.DataJSON, &b)
				if !reflect.DeepEqual(a, b) {
					t.Errorf("data = %s, want %s", got.Data, w.DataJSON)
				}
				want.Data = got.Data
			}
			if !got.Time.Equal(want.Time) {
				t.Errorf("time = %v, want %v", got.Time, want.Time)
			}
			got.Time = want.Time
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if err := got.Validate(0); err != nil {
				t.Errorf("decoded event is invalid: %v", err)
			}
			if _, ok, err := eventkit.SubjectSeq(got); w.Extensions["subjectseq"] != "" && (!ok || err != nil) {
				t.Errorf("subjectseq not readable: %v %v", ok, err)
			}
		})
	}
}

// FuzzDecode: whatever the bytes, under every converter and both envelope
// settings, Decode returns either a valid event or one DecodeError keeping
// the value, and never panics.
func FuzzDecode(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		var hs []byte
		for _, h := range fx.Headers {
			hs = append(hs, h[0]...)
			hs = append(hs, '=')
			hs = append(hs, h[1]...)
			hs = append(hs, '\n')
		}
		var key []byte
		if fx.Key != nil {
			key = []byte(*fx.Key)
		}
		f.Add(uint8(fx.Format.Key)|uint8(fx.Format.Value)<<2|uint8(fx.Format.Headers)<<4, fx.Format.Envelope, key, fx.value(f), hs)
	}
	f.Fuzz(func(t *testing.T, conv uint8, envelope bool, key, value, headers []byte) {
		fm := debezium.Format{
			Key: debezium.Converter(conv & 3 % 3), Value: debezium.Converter(conv >> 2 & 3 % 3), Headers: debezium.Converter(conv >> 4 & 3 % 3),
			Envelope: envelope, BinaryPayload: conv&64 != 0,
			Extensions: map[string]string{"subjectseq": "seq"},
		}
		hm := map[string]string{}
		for line := range bytes.SplitSeq(headers, []byte("\n")) {
			k, v, _ := bytes.Cut(line, []byte("="))
			hm[string(k)] = string(v)
		}
		ev, err := fm.Decode(debezium.Message{Key: key, Value: value, Headers: maps.All(hm), Time: time.Unix(1, 0)})
		if err != nil {
			var de *eventkit.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err %v is not a DecodeError", err)
			}
			if !bytes.Equal(de.Raw, value) {
				t.Fatalf("Raw %q != value %q", de.Raw, value)
			}
			return
		}
		if err := ev.Validate(1 << 30); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if _, _, err := eventkit.SubjectSeq(ev); err != nil {
			t.Fatalf("decoded a bad subjectseq: %v", err)
		}
		_, _ = fm.DecodeRedis(hm)
	})
}
