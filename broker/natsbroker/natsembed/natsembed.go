// Package natsembed runs a NATS server with JetStream inside the process,
// for zero set-up use (`eventkit demo`, tests) with the NATS broker adapter.
// It is a package of its own so that importing the adapter
// (github.com/eventkit/eventkit/broker/natsbroker) does not link nats-server.
//
// A server started on a storage directory keeps every stream, consumer and
// unacked event there: start it again on the same directory and the broker
// finds them all, with the same guarantees as on an external server.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
)

// Options configure Start.
type Options struct {
	// Broker configures the Broker Start returns.
	Broker natsbroker.Options
	// Host to listen on (default "127.0.0.1").
	Host string
	// Port to listen on; 0 picks a free one.
	Port int
	// InProcessOnly: do not listen on any port; clients connect in-process
	// only (Server.Connect). Server.URL is then empty.
	InProcessOnly bool
	// MaxPayload is the server's max_payload in bytes (default 1 MiB).
	MaxPayload int32
	// MaxStore bounds JetStream's file storage in bytes (0: the server's default).
	MaxStore int64
	// Logs sends the server's log to stderr.
	Logs bool
}

// Server is a NATS server with JetStream running in this process, and a
// Broker connected to it.
type Server struct {
	// Broker is connected to the server; Close closes it.
	Broker *natsbroker.Broker
	srv    *server.Server
	opts   Options
}

// Start starts a NATS server with JetStream inside this process,
// storing streams in dir (which survives restarts: start again on the same
// dir to find every stream, consumer and unacked event), and returns it with
// a Broker connected to it. It needs no setup at all, which is what
// `eventkit demo` and tests use. ctx bounds the start.
func Start(ctx context.Context, dir string, opts Options) (*Server, error) {
	if dir == "" {
		return nil, errors.New("natsembed: Start needs a storage directory")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		ServerName: "eventkit-embedded",
		Host:       opts.Host,
		Port:       port,
		DontListen: opts.InProcessOnly,
		JetStream:  true,
		StoreDir:   dir,
		MaxPayload: opts.MaxPayload,
		NoSigs:     true,
		NoLog:      !opts.Logs,
	}
	if opts.MaxStore > 0 {
		sopts.JetStreamMaxStore = opts.MaxStore
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: embedded server: %w", err)
	}
	if opts.Logs {
		srv.ConfigureLogger()
	}
	srv.Start()
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(30 * time.Second) }()
	select {
	case ok := <-ready:
		if !ok {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, errors.New("natsembed: embedded server did not become ready")
		}
	case <-ctx.Done():
		<-ready
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, ctx.Err()
	}
	e := &Server{srv: srv, opts: opts}
	b, err := e.Connect(ctx, opts.Broker)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	e.Broker = b
	return e, nil
}

// NATSServer returns the running nats-server.
func (e *Server) NATSServer() *server.Server { return e.srv }

// URL is the server's client URL ("nats://127.0.0.1:port"), empty with
// InProcessOnly.
func (e *Server) URL() string {
	if e.opts.InProcessOnly {
		return ""
	}
	return e.srv.ClientURL()
}

// Connect returns another Broker (its own connection) on the server: over
// the loopback port, or in-process with InProcessOnly.
func (e *Server) Connect(ctx context.Context, opts natsbroker.Options) (*natsbroker.Broker, error) {
	if e.opts.InProcessOnly {
		opts.NATSOptions = append([]nats.Option{nats.InProcessServer(e.srv)}, opts.NATSOptions...)
		return natsbroker.Connect(ctx, "", opts)
	}
	return natsbroker.Connect(ctx, e.srv.ClientURL(), opts)
}

// Close closes the Broker, then shuts the server down and waits until it
// has stopped (JetStream flushes its store).
func (e *Server) Close(ctx context.Context) error {
	var err error
	if e.Broker != nil {
		err = e.Broker.Close(ctx)
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	return err
}
