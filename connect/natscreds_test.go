package connect_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/eventkit/eventkit"
	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/connect"
)

// operatorServer runs a NATS server (in the process, on a TCP port) in
// operator mode: it trusts one operator, whose account is preloaded in a
// memory resolver with JetStream enabled. It returns the server's address
// and the account's key pair, which signs user JWTs.
func operatorServer(t *testing.T) (addr string, account nkeys.KeyPair) {
	t.Helper()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "ORDERS"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	// JetStream in operator mode needs a system account.
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	res := &server.MemAccResolver{}
	if err := res.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	if err := res.Store(sysPub, sysJWT); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: res,
		SystemAccount: sysPub, JetStream: true, StoreDir: t.TempDir()})
	return s, acc
}

func startServer(t *testing.T, o *server.Options) string {
	t.Helper()
	o.Host, o.Port, o.NoSigs, o.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.Addr().String()
}

// userCreds writes a credentials file for a new user signed by account (the
// format nsc writes) and returns its path and the user's seed.
func userCreds(t *testing.T, account nkeys.KeyPair, mod func(*jwt.UserClaims)) (path, seed string) {
	t.Helper()
	u, _ := nkeys.CreateUser()
	pub, _ := u.PublicKey()
	s, _ := u.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "orders-relay"
	if mod != nil {
		mod(uc)
	}
	userJWT, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, s)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, string(s)
}

// TestNATSCredentials: a credentials file (user JWT + NKey seed) against an
// operator-mode server, from a connect URL (creds=) and from
// natsbroker.Options.CredentialsFile, with events through JetStream; a user
// of an account the server does not trust, an expired user, a missing or
// malformed file each fail with one typed error that shows no secret.
func TestNATSCredentials(t *testing.T) {
	addr, acc := operatorServer(t)
	good, goodSeed := userCreds(t, acc, nil)
	other, _ := nkeys.CreateAccount()
	untrusted, untrustedSeed := userCreds(t, other, nil)
	expired, expiredSeed := userCreds(t, acc, func(uc *jwt.UserClaims) { uc.Expires = time.Now().Add(-time.Minute).Unix() })
	garbage := filepath.Join(t.TempDir(), "garbage.creds")
	if err := os.WriteFile(garbage, []byte("password=s3cret-in-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := []string{goodSeed, untrustedSeed, expiredSeed, "s3cret-in-a-file", "-----BEGIN"}
	q := url.QueryEscape

	// Events go through JetStream on the authenticated connection.
	roundTrip := func(t *testing.T, b broker.Broker) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		topic := "creds-" + strings.ReplaceAll(t.Name(), "/", "-")
		got := make(chan string, 1)
		sub, err := b.Subscribe(ctx, topic, "g", func(ctx context.Context, d broker.Delivery) error {
			got <- d.Event().ID
			return d.Ack(ctx)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close(ctx)
		ev := eventkit.New("test.creds", "application/json", []byte(`{}`))
		if err := b.Publish(ctx, topic, ev); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-got:
			if id != ev.ID {
				t.Fatalf("got %s, want %s", id, ev.ID)
			}
		case <-ctx.Done():
			t.Fatal("no delivery")
		}
	}
	noSecret := func(t *testing.T, err error) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Fatalf("the error shows a secret (%.12s...): %v", s, err)
			}
		}
	}

	t.Run("url", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := connect.Broker(ctx, "nats://"+addr+"?creds="+q(good), connect.WithTimeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(ctx)
		roundTrip(t, b)
	})
	t.Run("library", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := natsbroker.Connect(ctx, "nats://"+addr, natsbroker.Options{CredentialsFile: good})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(ctx)
		roundTrip(t, b)
	})
	t.Run("no-credentials", func(t *testing.T) {
		_, err := openBroker(context.Background(), "nats://"+addr)
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("no credentials: %v, want nats.ErrAuthorization", err)
		}
	})
	for _, c := range []struct{ name, file string }{{"untrusted-account", untrusted}, {"expired-user", expired}} {
		t.Run(c.name, func(t *testing.T) {
			_, err := openBroker(context.Background(), "nats://"+addr+"?creds="+q(c.file))
			if err == nil {
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthExpired) {
				t.Fatalf("%s: %v, want nats.ErrAuthorization or nats.ErrAuthExpired", c.name, err)
			}
			noSecret(t, err)
			t.Logf("%s: %v", c.name, err)
		})
	}
	for _, c := range []struct{ name, param string }{
		{"missing-file", "creds=" + q(filepath.Join(t.TempDir(), "nope.creds"))},
		{"garbage-file", "creds=" + q(garbage)},
		{"creds-as-nkey", "nkey=" + q(garbage)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := openBroker(context.Background(), "nats://"+addr+"?"+c.param)
			if !errors.Is(err, connect.ErrBadURL) || !errors.Is(err, natsbroker.ErrCredentials) {
				t.Fatalf("%s: %v, want connect.ErrBadURL wrapping natsbroker.ErrCredentials", c.name, err)
			}
			noSecret(t, err)
			t.Logf("%s: %v", c.name, err)
		})
	}
}

// TestNATSNKeySeedFile: an NKey seed file from the library
// (natsbroker.Options.NKeySeedFile) and from a URL (nkey=) against a server
// with that NKey user; another user's seed or a credentials file given as a
// seed file fail.
func TestNATSNKeySeedFile(t *testing.T) {
	u, _ := nkeys.CreateUser()
	pub, _ := u.PublicKey()
	seed, _ := u.Seed()
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ := nkeys.CreateUser()
	oseed, _ := o.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	if err := os.WriteFile(otherFile, oseed, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := natsbroker.Connect(ctx, "nats://"+addr, natsbroker.Options{NKeySeedFile: seedFile})
	if err != nil {
		t.Fatalf("library: %v", err)
	}
	_ = b.Close(ctx)
	_, err = natsbroker.Connect(ctx, "nats://"+addr, natsbroker.Options{NKeySeedFile: otherFile})
	if !errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), string(oseed)) {
		t.Fatalf("another user's seed: %v, want nats.ErrAuthorization without the seed", err)
	}
	q := url.QueryEscape
	runCases(t, []tlsCase{
		{"url", "nats://" + addr + "?nkey=" + q(seedFile), true, ""},
		{"url-other-seed", "nats://" + addr + "?nkey=" + q(otherFile), false, "uthorization"},
		{"url-missing-file", "nats://" + addr + "?nkey=" + q(filepath.Join(dir, "nope.nk")), false, "no such file"},
	}, openBroker)
}
