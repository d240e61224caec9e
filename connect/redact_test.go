package connect_test

import (
	"context"
	"strings"
	"testing"
	"time"

	natsbroker "github.com/eventkit/eventkit/broker/nats"
	"github.com/eventkit/eventkit/broker/rabbitmq"
	redisbroker "github.com/eventkit/eventkit/broker/redis"
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
		_, err := rabbitmq.New(ctx, rabbitmq.Options{URL: u})
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
	for _, u := range append(append(bad("postgres", "postgres", "/test"), bad("mysql", "root", "/test")...), "bogus://u:"+secret+"@h", "u:"+secret+"@h") {
		_, err := connect.OpenStore(ctx, u)
		check("connect.OpenStore", u, err)
	}
}
