package connect_test

import (
	"context"
	"strings"
	"testing"
	"time"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/connect"
)

const secret = "Pl4ntedS3cr3t"

// TestErrorsHideSecrets checks the errors of the adapters and stores
// themselves (no CLI scrubbing behind them) for URLs that fail to parse or to
// connect.
func TestErrorsHideSecrets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bad := func(scheme, user, path string) []string {
		return []string{
			scheme + "://" + user + ":s3%c" + secret + "@127.0.0.1:1" + path,
			scheme + "://" + user + ":" + secret + "@127.0.0.1:1" + path,
			scheme + "://" + user + ":" + secret + "@127.0.0.1:port" + path,
		}
	}
	check := func(what, url string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s(%q) succeeded", what, url)
			return
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "s3%c") {
			t.Errorf("%s(%q) = %v: shows the secret", what, url, err)
		}
	}
	for _, u := range bad("nats", "u", "") {
		_, err := natsbroker.Connect(ctx, u, natsbroker.Options{})
		check("natsbroker.Connect", u, err)
		_, err = connect.Broker(ctx, u)
		check("connect.Broker", u, err)
	}
	for _, u := range bad("amqp", "guest", "/") {
		_, err := rabbitmqbroker.New(ctx, rabbitmqbroker.Options{URL: u})
		check("rabbitmq.New", u, err)
		_, err = connect.Broker(ctx, u)
		check("connect.Broker", u, err)
	}
	for _, u := range bad("redis", "", "/0") {
		_, err := redisbroker.New(ctx, redisbroker.Options{URL: u})
		check("redisbroker.New", u, err)
		_, err = connect.Broker(ctx, u)
		check("connect.Broker", u, err)
	}
	for _, u := range bad("kafka", "u", "") {
		_, err := connect.Broker(ctx, u)
		check("connect.Broker", u, err)
	}
	// TLS and authentication parameters that carry a secret (a password,
	// or a key file whose path holds it), in URLs that fail.
	missing := "/nonexistent/" + secret
	for _, u := range []string{
		"kafka://127.0.0.1:1?sasl.mechanism=PLAIN&sasl.username=u&sasl.password=" + secret,
		"kafka://u:" + secret + "@127.0.0.1:1?sasl.mechanism=SCRAM-SHA-512&security.protocol=SASL_SSL",
		"kafka://127.0.0.1:1?ssl.certificate.location=/nonexistent&ssl.key.location=" + missing,
		"kafka://u:" + secret + "@127.0.0.1:1?sasl.mechanism=BOGUS",
		"tls://127.0.0.1:1?nkey=" + missing,
		"tls://127.0.0.1:1?creds=" + missing,
		"tls://" + secret + "@127.0.0.1:1?tlsca=/nonexistent",
		"tls://127.0.0.1:1?tlscert=/nonexistent&tlskey=" + missing,
		"rediss://u:" + secret + "@127.0.0.1:1/0?cert=/nonexistent&key=" + missing,
		"amqps://u:" + secret + "@127.0.0.1:1/?certfile=/nonexistent&keyfile=" + missing,
	} {
		_, err := connect.Broker(ctx, u)
		check("connect.Broker", u, err)
	}
	for _, u := range []string{
		"postgres://u:" + secret + "@127.0.0.1:1/test?sslmode=verify-full&sslrootcert=/nonexistent&sslcert=/nonexistent&sslkey=" + missing,
		"mysql://u:" + secret + "@127.0.0.1:1/test?ssl-cert=/nonexistent&ssl-key=" + missing,
		"mysql://u:" + secret + "@127.0.0.1:1/test?ssl-mode=BOGUS",
	} {
		_, err := connect.OpenStore(ctx, u)
		check("connect.OpenStore", u, err)
	}
	for _, u := range append(append(bad("postgres", "postgres", "/test"), bad("mysql", "root", "/test")...), "bogus://u:"+secret+"@h", "u:"+secret+"@h") {
		_, err := connect.OpenStore(ctx, u)
		check("connect.OpenStore", u, err)
	}
}
