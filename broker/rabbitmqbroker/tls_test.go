package rabbitmqbroker_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventkit/eventkit/broker/rabbitmqbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// tlsNode returns the certificate directory and the AMQPS address of the
// private TLS node scripts/tlsservers.sh starts (the test script does);
// outside CI the test skips when they are not set, in CI it fails.
func tlsNode(t *testing.T) (certs, addr string) {
	t.Helper()
	certs, addr = os.Getenv("EVENTKIT_TLS_CERTS"), os.Getenv("EVENTKIT_TLS_RABBITMQ")
	if certs == "" || addr == "" {
		testenv.Unavailable(t, "EVENTKIT_TLS_CERTS and EVENTKIT_TLS_RABBITMQ are not set: start the private TLS node with "+
			"`eval \"$(scripts/tlsservers.sh start /tmp/eventkit-tls)\"` (stop: scripts/tlsservers.sh stop /tmp/eventkit-tls)")
	}
	return certs, addr
}

// clientTLS is a configuration trusting the test CA, with the client
// certificate (common name eventkit-client) when withCert is set.
func clientTLS(t *testing.T, certs string, withCert bool) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	cfg.RootCAs.AppendCertsFromPEM(pem)
	if withCert {
		c, err := tls.LoadX509KeyPair(filepath.Join(certs, "client.pem"), filepath.Join(certs, "client-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// Options.TLS with a client certificate and auth_mechanism=external: the
// node maps the certificate's common name to its user, and events go
// through the TLS connection both ways. Without the certificate the node
// refuses the connection.
func TestTLSExternalAuth(t *testing.T) {
	certs, addr := tlsNode(t)
	opts := rabbitmqbroker.Options{URL: "amqps://" + addr + "/?auth_mechanism=external", TLS: clientTLS(t, certs, true)}
	topic := provisionedTopic(t, opts, "g")
	b := newBroker(t, opts)
	ctx := ctxT(t, 30*time.Second)
	got, h := collect(nil)
	sub, err := b.Subscribe(ctx, topic, "g", h)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	evs := mk(3)
	if err := b.Publish(ctx, topic, evs...); err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		if r := next(t, got, 10*time.Second); r.id != evs[i].ID {
			t.Fatalf("delivery %d = %s, want %s", i, r.id, evs[i].ID)
		}
	}

	opts.TLS = clientTLS(t, certs, false)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := rabbitmqbroker.New(cctx, opts); err == nil {
		_ = b.Close(cctx)
		t.Fatal("connected without a client certificate")
	} else {
		// With TLS 1.3 the client's handshake ends before the server checks
		// the certificate, so the refusal shows as a closed connection.
		t.Logf("without a client certificate: %v", err)
	}
}
