package redisbroker_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/broker/brokertest"
	redisbroker "github.com/eventkit/eventkit/broker/redisbroker"
	"github.com/eventkit/eventkit/internal/testenv"
)

// childRedis is a redis-server of the test's own, a child process with its
// data in dir, listening on a unix socket there and on no TCP port.
type childRedis struct {
	bin, dir string
	args     []string
	cmd      *exec.Cmd
	exited   chan struct{}
}

func startChildRedis(t *testing.T, args ...string) *childRedis {
	t.Helper()
	bin := testenv.Binary(t, "redis-server", "apt-get install redis-server")
	r := &childRedis{bin: bin, dir: t.TempDir(), args: args}
	r.start(t)
	t.Cleanup(r.kill)
	return r
}

func (r *childRedis) url() string { return "unix://" + filepath.Join(r.dir, "redis.sock") }

func (r *childRedis) start(t *testing.T) {
	t.Helper()
	args := append([]string{"--port", "0", "--unixsocket", filepath.Join(r.dir, "redis.sock"), "--dir", r.dir,
		"--save", "", "--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)
	r.cmd = exec.Command(r.bin, args...)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(r.cmd, r.exited)
	o, err := goredis.ParseURL(r.url())
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(o)
	defer c.Close()
	testenv.WaitFor(t, 20*time.Second, "the child redis-server to answer PING", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
}

// kill stops the server as a crash would (SIGKILL: no final save).
func (r *childRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

func (r *childRedis) broker(t *testing.T) *redisbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := redisbroker.New(ctx, redisbroker.Options{URL: r.url()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformanceDurable runs brokertest.RunDurable on a child redis-server
// with appendonly yes and appendfsync always, killed (SIGKILL) and started
// again on its data directory; it checks first that such a server, and no
// other, makes Capabilities claim Durable.
func TestConformanceDurable(t *testing.T) {
	durable := []string{"--appendonly", "yes", "--appendfsync", "always"}
	for _, c := range []struct {
		args []string
		want bool
	}{
		{durable, true},
		{[]string{"--appendonly", "yes", "--appendfsync", "everysec"}, false},
		{[]string{"--appendonly", "no"}, false},
	} {
		b := startChildRedis(t, c.args...).broker(t)
		got := b.Capabilities().Durable
		_ = b.Close(context.Background())
		if got != c.want {
			t.Fatalf("Capabilities().Durable = %v on a server with %v, want %v", got, c.args, c.want)
		}
	}
	r := startChildRedis(t, durable...)
	brokertest.RunDurable(t, brokertest.Config{
		New: func(t *testing.T) broker.Broker { return r.broker(t) },
		Restart: func(t *testing.T) {
			r.kill()
			r.start(t)
		},
	})
}
