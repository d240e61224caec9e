// Package testenv finds the real services that integration tests use and
// decides what happens when one is missing: outside CI the test is skipped
// with a message that says how to start the service; in CI (CI set) it fails.
package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Service describes one external service.
type Service struct {
	Name    string // "PostgreSQL"
	EnvVar  string // variable that overrides the address/URL
	Default string // default URL
	Start   string // how to start it, for the skip message
}

// The services of the test machine, each overridable by its variable.
var (
	Postgres = Service{"PostgreSQL", "EVENTKIT_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		"pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start (or run .ci/run)"}
	MySQL = Service{"MariaDB/MySQL", "EVENTKIT_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test?parseTime=true&multiStatements=true",
		"start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd (or run .ci/run)"}
	Redis = Service{"Redis", "EVENTKIT_REDIS_URL", "redis://127.0.0.1:6379/0",
		"redis-server --daemonize yes --port 6379 --save '' --appendonly no (or run .ci/run)"}
	RabbitMQ = Service{"RabbitMQ", "EVENTKIT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/",
		"rabbitmq-server -detached (or run .ci/run)"}
	NATS = Service{"NATS JetStream", "EVENTKIT_NATS_URL", "nats://127.0.0.1:4222",
		"nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server & (or run .ci/run)"}
)

// InCI reports whether tests run in CI, where a missing service is a failure.
func InCI() bool { return os.Getenv("CI") != "" }

// Unavailable ends t for a service or program it needs that is missing:
// in CI (CI set) the test fails, elsewhere it is skipped; msg says how to
// provide it.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// SyncBuffer is a bytes.Buffer that a logger, or a child process, writes
// while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// URL returns the service's URL (from its variable or the default) after
// checking that its port answers. If it does not, the test fails in CI and is
// skipped elsewhere, with a message saying how to start the service.
func (s Service) URL(t testing.TB) string {
	t.Helper()
	u := s.Lookup()
	addr := hostPort(u)
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		Unavailable(t, s.Name+" is not reachable at "+addr+" ("+err.Error()+"); set "+s.EnvVar+" or start it: "+s.Start)
	}
	_ = conn.Close()
	return u
}

// Lookup returns the service's URL, from its variable or the default,
// without checking that it answers (benchmarks that connect, and skip,
// themselves).
func (s Service) Lookup() string {
	if u := os.Getenv(s.EnvVar); u != "" {
		return u
	}
	return s.Default
}

func hostPort(u string) string {
	if i := strings.Index(u, "@tcp("); i >= 0 { // mysql DSN
		rest := u[i+5:]
		if j := strings.IndexByte(rest, ')'); j >= 0 {
			return rest[:j]
		}
	}
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Host
	}
	return u
}

// Name returns prefix plus a random suffix, for a topic, stream, schema or
// table that no other test (or test package running in parallel) uses.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// Binary returns the path of the program name (exec.LookPath), for tests
// that run a private server as a child process. If it is not installed,
// the test fails in CI and is skipped elsewhere, saying how to install it.
func Binary(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" is not installed ("+err.Error()+"): "+install)
	}
	return p
}
