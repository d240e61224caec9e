package connect_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventkit/eventkit/connect"
	"github.com/eventkit/eventkit/internal/testenv"
	"github.com/eventkit/eventkit/internal/testenv/tlscert"
)

// tlsCase is one URL that must open (ok) or must fail.
type tlsCase struct {
	name string
	url  string
	ok   bool
	why  string // for a failure: a text its error must contain
}

func runCases(t *testing.T, cases []tlsCase, open func(ctx context.Context, url string) (func(), error)) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			closeFn, err := open(ctx, c.url)
			if err == nil {
				closeFn()
			}
			switch {
			case c.ok && err != nil:
				t.Fatalf("open %s: %v", connect.Redact(c.url), err)
			case !c.ok && err == nil:
				t.Fatalf("open %s succeeded, want a failure", connect.Redact(c.url))
			}
			if !c.ok && c.why != "" && !strings.Contains(err.Error(), c.why) {
				t.Fatalf("open %s: %v, want an error about %q", connect.Redact(c.url), err, c.why)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func openBroker(ctx context.Context, u string) (func(), error) {
	b, err := connect.Broker(ctx, u, connect.WithTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	return func() { _ = b.Close(context.Background()) }, nil
}

func openStore(ctx context.Context, u string) (func(), error) {
	st, err := connect.OpenStore(ctx, u, connect.WithTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	return st.Close, nil
}

func certs(t *testing.T) tlscert.Files {
	t.Helper()
	f, err := tlscert.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestKafkaTLSAndSASL runs kfake clusters with mutual TLS, SASL PLAIN and
// SCRAM-SHA-256/512, alone and together: each URL form connects, and a
// wrong CA, a missing client certificate, a wrong password or a wrong
// mechanism fails.
func TestKafkaTLSAndSASL(t *testing.T) {
	f := certs(t)
	srvTLS, err := f.ServerTLS(true)
	if err != nil {
		t.Fatal(err)
	}
	q := url.QueryEscape
	tlsParams := "ssl.ca.location=" + q(f.CA) + "&ssl.certificate.location=" + q(f.ClientCert) + "&ssl.key.location=" + q(f.ClientKey)

	tlsCluster := cluster(t, kfake.TLS(srvTLS))
	runCases(t, []tlsCase{
		{"ssl", "kafka://" + tlsCluster + "?security.protocol=SSL&" + tlsParams, true, ""},
		{"ssl-implied", "kafka://" + tlsCluster + "?" + tlsParams, true, ""},
		{"ssl-other-ca", "kafka://" + tlsCluster + "?ssl.ca.location=" + q(f.OtherCA) + "&ssl.certificate.location=" + q(f.ClientCert) + "&ssl.key.location=" + q(f.ClientKey), false, ""},
		{"ssl-no-client-cert", "kafka://" + tlsCluster + "?ssl.ca.location=" + q(f.CA), false, ""},
		{"plaintext-to-tls", "kafka://" + tlsCluster, false, ""},
		{"bad-protocol", "kafka://" + tlsCluster + "?security.protocol=TLS", false, ""},
		{"misspelt-param", "kafka://" + tlsCluster + "?ssl.ca.locaton=" + q(f.CA), false, ""},
	}, openBroker)

	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			plain := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "orders", "s3cret"))
			both := cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "orders", "s3cret"), kfake.TLS(srvTLS))
			other := "SCRAM-SHA-512"
			if mech == other {
				other = "PLAIN"
			}
			runCases(t, []tlsCase{
				{"sasl", "kafka://orders:s3cret@" + plain + "?sasl.mechanism=" + mech, true, ""},
				{"sasl-params", "kafka://" + plain + "?security.protocol=SASL_PLAINTEXT&sasl.mechanism=" + mech + "&sasl.username=orders&sasl.password=s3cret", true, ""},
				{"sasl-wrong-password", "kafka://orders:wrong@" + plain + "?sasl.mechanism=" + mech, false, ""},
				{"sasl-wrong-mechanism", "kafka://orders:s3cret@" + plain + "?sasl.mechanism=" + other, false, ""},
				{"user-without-mechanism", "kafka://orders:s3cret@" + plain, false, ""},
				{"no-credentials", "kafka://" + plain, false, ""},
				{"sasl-ssl", "kafka://orders:s3cret@" + both + "?security.protocol=SASL_SSL&sasl.mechanism=" + mech + "&" + tlsParams, true, ""},
				{"sasl-ssl-wrong-password", "kafka://orders:wrong@" + both + "?sasl.mechanism=" + mech + "&" + tlsParams, false, ""},
			}, openBroker)
		})
	}
}

func cluster(t *testing.T, opts ...kfake.Opt) string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// tlsEnv returns the variables scripts/tlsservers.sh printed (read from the
// environment); outside CI the test skips when they are missing.
func tlsEnv(t *testing.T, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			msg := n + " is not set: start the TLS servers with `eval \"$(scripts/tlsservers.sh start /tmp/eventkit-tls)\"` (stop: scripts/tlsservers.sh stop /tmp/eventkit-tls)"
			testenv.Unavailable(t, msg)
		}
		out = append(out, v)
	}
	return out
}

// TestNATSTLSAndAuth: tls:// with the CA and a client certificate, with a
// user and password, an NKey seed file or a token; no client certificate,
// another CA, a wrong password or token fail.
func TestNATSTLSAndAuth(t *testing.T) {
	env := tlsEnv(t, "EVENTKIT_TLS_CERTS", "EVENTKIT_TLS_NATS", "EVENTKIT_TLS_NATS_TOKEN")
	dir, mtls, tok := env[0], env[1], env[2]
	q := func(name string) string { return url.QueryEscape(dir + "/" + name) }
	ca := "tlsca=" + q("ca.pem")
	client := ca + "&tlscert=" + q("client.pem") + "&tlskey=" + q("client-key.pem")
	runCases(t, []tlsCase{
		{"user-password", "tls://orders:s3cret@" + mtls + "?" + client, true, ""},
		{"nats-scheme-with-ca", "nats://orders:s3cret@" + mtls + "?" + client, true, ""},
		{"nkey", "tls://" + mtls + "?" + client + "&nkey=" + q("user.nk"), true, ""},
		{"wrong-password", "tls://orders:wrong@" + mtls + "?" + client, false, ""},
		{"no-credentials", "tls://" + mtls + "?" + client, false, ""},
		{"no-client-cert", "tls://orders:s3cret@" + mtls + "?" + ca, false, ""},
		{"other-ca", "tls://orders:s3cret@" + mtls + "?tlsca=" + q("other-ca.pem") + "&tlscert=" + q("client.pem") + "&tlskey=" + q("client-key.pem"), false, ""},
		{"system-roots", "tls://orders:s3cret@" + mtls, false, ""},
		{"token", "tls://s3cret@" + tok + "?" + ca, true, ""},
		{"wrong-token", "tls://wrong@" + tok + "?" + ca, false, ""},
		{"misspelt-param", "tls://s3cret@" + tok + "?tlsCA=" + q("ca.pem"), false, ""},
	}, openBroker)
}

// TestRedisTLSAndACL: rediss:// with the CA, a client certificate and an
// ACL user; the default user (no password), a wrong password, no client
// certificate or another CA fail.
func TestRedisTLSAndACL(t *testing.T) {
	env := tlsEnv(t, "EVENTKIT_TLS_CERTS", "EVENTKIT_TLS_REDIS")
	dir, addr := env[0], env[1]
	q := func(name string) string { return url.QueryEscape(dir + "/" + name) }
	client := "cacert=" + q("ca.pem") + "&cert=" + q("client.pem") + "&key=" + q("client-key.pem")
	runCases(t, []tlsCase{
		{"acl-user", "rediss://orders:s3cret@" + addr + "/0?" + client, true, ""},
		{"wrong-password", "rediss://orders:wrong@" + addr + "/0?" + client, false, ""},
		{"default-user", "rediss://" + addr + "/0?" + client, false, ""},
		{"no-client-cert", "rediss://orders:s3cret@" + addr + "/0?cacert=" + q("ca.pem"), false, ""},
		{"other-ca", "rediss://orders:s3cret@" + addr + "/0?cacert=" + q("other-ca.pem") + "&cert=" + q("client.pem") + "&key=" + q("client-key.pem"), false, ""},
		{"plain-scheme-with-files", "redis://orders:s3cret@" + addr + "/0?" + client, false, ""},
	}, openBroker)
}

// TestPostgresTLS: sslmode=verify-full with sslrootcert, by password and by
// client certificate (sslcert/sslkey); another CA, a host name the
// certificate does not name, a plain connection or a wrong password fail.
func TestPostgresTLS(t *testing.T) {
	env := tlsEnv(t, "EVENTKIT_TLS_CERTS", "EVENTKIT_TLS_POSTGRES")
	dir, addr := env[0], env[1]
	_, port, _ := strings.Cut(addr, ":")
	q := func(name string) string { return url.QueryEscape(dir + "/" + name) }
	verify := "sslmode=verify-full&sslrootcert=" + q("ca.pem")
	runCases(t, []tlsCase{
		{"password", "postgres://orders:s3cret@" + addr + "/test?" + verify, true, ""},
		{"localhost", "postgres://orders:s3cret@localhost:" + port + "/test?" + verify, true, ""},
		{"client-cert", "postgres://eventkit-client@" + addr + "/test?" + verify + "&sslcert=" + q("client.pem") + "&sslkey=" + q("client-key.pem"), true, ""},
		{"client-cert-missing", "postgres://eventkit-client@" + addr + "/test?" + verify, false, ""},
		{"wrong-password", "postgres://orders:wrong@" + addr + "/test?" + verify, false, ""},
		{"other-ca", "postgres://orders:s3cret@" + addr + "/test?sslmode=verify-full&sslrootcert=" + q("other-ca.pem"), false, "unknown authority"},
		{"wrong-host-name", "postgres://orders:s3cret@127.0.0.2:" + port + "/test?" + verify, false, "not 127.0.0.2"},
		{"no-tls", "postgres://orders:s3cret@" + addr + "/test?sslmode=disable", false, ""},
	}, openStore)
}

// TestMySQLTLS: MariaDB requiring secure transport, with ssl-ca
// (VERIFY_IDENTITY by default, or VERIFY_CA), by password and by client
// certificate (REQUIRE SUBJECT); another CA, no TLS, no client certificate
// or a wrong password fail.
func TestMySQLTLS(t *testing.T) {
	env := tlsEnv(t, "EVENTKIT_TLS_CERTS", "EVENTKIT_TLS_MYSQL")
	dir, addr := env[0], env[1]
	_, port, _ := strings.Cut(addr, ":")
	q := func(name string) string { return url.QueryEscape(dir + "/" + name) }
	ca := "ssl-ca=" + q("ca.pem")
	runCases(t, []tlsCase{
		{"password", "mysql://orders:s3cret@" + addr + "/test?" + ca, true, ""},
		{"verify-identity", "mysql://orders:s3cret@" + addr + "/test?ssl-mode=VERIFY_IDENTITY&" + ca, true, ""},
		{"verify-ca-other-name", "mysql://orders:s3cret@127.0.0.2:" + port + "/test?ssl-mode=VERIFY_CA&" + ca, true, ""},
		{"verify-identity-other-name", "mysql://orders:s3cret@127.0.0.2:" + port + "/test?" + ca, false, "not 127.0.0.2"},
		{"client-cert", "mysql://certuser@" + addr + "/test?" + ca + "&ssl-cert=" + q("client.pem") + "&ssl-key=" + q("client-key.pem"), true, ""},
		{"client-cert-missing", "mysql://certuser@" + addr + "/test?" + ca, false, ""},
		{"wrong-password", "mysql://orders:wrong@" + addr + "/test?" + ca, false, ""},
		{"other-ca", "mysql://orders:s3cret@" + addr + "/test?ssl-ca=" + q("other-ca.pem"), false, ""},
		{"no-tls", "mysql://orders:s3cret@" + addr + "/test", false, ""},
		{"bad-mode", "mysql://orders:s3cret@" + addr + "/test?ssl-mode=ON&" + ca, false, ""},
	}, openStore)
}

// TestRabbitMQTLS: amqps:// against a private RabbitMQ node requiring client
// certificates (scripts/tlsservers.sh), by password and by EXTERNAL (the
// certificate's name is the user); another CA, the system roots, a server
// name the certificate does not hold, no client certificate, a wrong
// password or a plain connection fail, and a misspelt or misplaced
// parameter is refused before dialling.
func TestRabbitMQTLS(t *testing.T) {
	env := tlsEnv(t, "EVENTKIT_TLS_CERTS", "EVENTKIT_TLS_RABBITMQ")
	dir, addr := env[0], env[1]
	_, port, _ := strings.Cut(addr, ":")
	q := func(name string) string { return url.QueryEscape(dir + "/" + name) }
	ca := "cacertfile=" + q("ca.pem")
	client := ca + "&certfile=" + q("client.pem") + "&keyfile=" + q("client-key.pem")
	runCases(t, []tlsCase{
		{"password", "amqps://orders:s3cret@" + addr + "/?" + client, true, ""},
		{"localhost", "amqps://orders:s3cret@localhost:" + port + "/?" + client, true, ""},
		{"external", "amqps://" + addr + "/?auth_mechanism=external&" + client, true, ""},
		{"external-with-heartbeat", "amqps://" + addr + "/?auth_mechanism=EXTERNAL&heartbeat=5&" + client, true, ""},
		{"server-name", "amqps://orders:s3cret@" + addr + "/?server_name_indication=localhost&" + client, true, ""},
		{"wrong-server-name", "amqps://orders:s3cret@" + addr + "/?server_name_indication=rabbit.example&" + client, false, "rabbit.example"},
		{"wrong-password", "amqps://orders:wrong@" + addr + "/?" + client, false, ""},
		{"no-client-cert", "amqps://orders:s3cret@" + addr + "/?" + ca, false, ""},
		{"other-ca", "amqps://orders:s3cret@" + addr + "/?cacertfile=" + q("other-ca.pem") + "&certfile=" + q("client.pem") + "&keyfile=" + q("client-key.pem"), false, "unknown authority"},
		{"system-roots", "amqps://orders:s3cret@" + addr + "/?certfile=" + q("client.pem") + "&keyfile=" + q("client-key.pem"), false, "unknown authority"},
		{"plain-to-tls-port", "amqp://orders:s3cret@" + addr + "/", false, ""},
		{"external-without-cert", "amqps://" + addr + "/?auth_mechanism=external&" + ca, false, "client certificate"},
		{"external-with-user", "amqps://orders:s3cret@" + addr + "/?auth_mechanism=external&" + client, false, "leave user"},
		{"bad-mechanism", "amqps://orders:s3cret@" + addr + "/?auth_mechanism=scram&" + client, false, "auth_mechanism"},
		{"cert-without-key", "amqps://orders:s3cret@" + addr + "/?" + ca + "&certfile=" + q("client.pem"), false, "both"},
		{"ca-not-pem", "amqps://orders:s3cret@" + addr + "/?cacertfile=" + q("user.nk") + "&certfile=" + q("client.pem") + "&keyfile=" + q("client-key.pem"), false, "no PEM"},
		{"plain-scheme-with-files", "amqp://orders:s3cret@" + addr + "/?" + client, false, "need amqps"},
		{"misspelt-param", "amqps://orders:s3cret@" + addr + "/?cacert=" + q("ca.pem"), false, "unknown parameter cacert"},
	}, openBroker)
}
