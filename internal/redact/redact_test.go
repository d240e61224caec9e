package redact_test

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/eventkit/eventkit/internal/redact"
)

// planted is the secret every case hides; it is written in the forms that
// break URL parsing too.
const planted = "s3cretPW"

func TestURLHidesEverySecret(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://app:" + planted + "@db:5432/orders", "postgres://app:xxxxx@db:5432/orders"},
		{"postgres://app:s3%cret" + planted + "@db:5432/orders", "postgres://xxxxx@db:5432/orders"},
		{"mysql://root:" + planted + "%zz@db:3306/x?tls=true", "mysql://xxxxx@db:3306/x?xxxxx"},
		{"amqp://guest:1234/" + planted + "@rabbit:5672/", "amqp://xxxxx@rabbit:5672/"},
		{"amqp://guest:pa#" + planted + "@rabbit:5672/", "amqp://xxxxx@rabbit:5672/?xxxxx"},
		{"amqp://guest:pa?" + planted + "@rabbit:5672/", "amqp://xxxxx@rabbit:5672/?xxxxx"},
		{"redis://:" + planted + "@cache:6379/0", "redis://:xxxxx@cache:6379/0"},
		{"rediss://default:" + planted + "@cache:6380/0", "rediss://default:xxxxx@cache:6380/0"},
		{"nats://" + planted + "@nats:4222", "nats://xxxxx@nats:4222"},
		{"nats://u:" + planted + "@n1:4222,nats://u:" + planted + "@n2:4222", "nats://u:xxxxx@n1:4222,nats://u:xxxxx@n2:4222"},
		{"kafka://k1:9092,k2:9092?sasl.mechanism=PLAIN&sasl.password=" + planted, "kafka://k1:9092,k2:9092?sasl.mechanism=PLAIN&sasl.password=xxxxx"},
		{"postgres://db/x?sslmode=verify-full&password=" + planted, "postgres://db/x?sslmode=verify-full&password=xxxxx"},
		{"postgres://db/x?PassWord=" + planted + "&application_name=a", "postgres://db/x?PassWord=xxxxx&application_name=a"},
		{"nats://n:4222?token=" + planted, "nats://n:4222?token=xxxxx"},
		{"postgres://db/x#" + planted, "postgres://db/x"},
		{"host=db user=app password=" + planted + " dbname=x", "host=db user=app password=xxxxx dbname=x"},
		{"root:" + planted + "@tcp(db:3306)/x", "xxxxx@tcp(db:3306)/x"},
		{"sqlite:///var/lib/orders.db", "sqlite:///var/lib/orders.db"},
		{"/var/lib/orders.db", "/var/lib/orders.db"},
		{"postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"},
		{"kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"},
	}
	for _, c := range cases {
		got := redact.URL(c.in)
		if got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(got, planted) {
			t.Errorf("URL(%q) = %q shows the secret", c.in, got)
		}
	}
}

func TestScrubber(t *testing.T) {
	raw := "postgres://app:s3%25cret" + planted + "@db/x?token=tok" + planted
	s := redact.NewScrubber(raw, "", "sqlite:///x.db")
	for _, text := range []string{
		"cannot parse `" + raw + "`",
		"password s3%cret" + planted + " rejected",
		"token tok" + planted,
	} {
		if got := s.String(text); strings.Contains(got, planted) {
			t.Errorf("String(%q) = %q", text, got)
		}
	}
	var buf bytes.Buffer
	w := s.Writer(&buf)
	if n, err := w.Write([]byte("err: " + raw + "\n")); err != nil || n != len("err: "+raw+"\n") {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if strings.Contains(buf.String(), planted) {
		t.Errorf("Writer wrote %q", buf.String())
	}
	if got := s.String("sqlite:///x.db is fine"); got != "sqlite:///x.db is fine" {
		t.Errorf("String changed text without secrets: %q", got)
	}
}

func TestErr(t *testing.T) {
	raw := "amqp://guest:s3%cret" + planted + "@h:5672/"
	_, perr := url.Parse(raw)
	err := redact.Err(perr, raw)
	if strings.Contains(err.Error(), planted) {
		t.Errorf("Err = %q", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("errors.As(*url.Error) = false for %v", err)
	}
	if redact.Err(nil, raw) != nil {
		t.Error("Err(nil) != nil")
	}
}

func TestScrubberSplitPassword(t *testing.T) {
	raw := "postgres://app:1234/" + planted + "@db:5432/x"
	got := redact.NewScrubber(raw).String("failed to connect to `user=root database=" + planted + "@db:5432/x`")
	if strings.Contains(got, planted) {
		t.Errorf("got %q", got)
	}
}

func TestScrubberKeepsUserNames(t *testing.T) {
	s := redact.NewScrubber("postgres://postgres@db:5432/x", "amqp://guest@rabbit/")
	if got := s.String("user=postgres guest"); got != "user=postgres guest" {
		t.Errorf("got %q: a user name without a password is not a secret", got)
	}
	if got := redact.NewScrubber("nats://tok3n@n:4222").String("auth tok3n"); got != "auth xxxxx" {
		t.Errorf("got %q: a NATS user info alone is a token", got)
	}
}
