package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventkit/eventkit/broker"
	"github.com/eventkit/eventkit/internal/console"
)

func init() { commands = append(commands, newConsoleCmd) }

func newConsoleCmd(g *globals) *cobra.Command {
	c := &conn{g: g}
	var listenAddr, token string
	var topics, groups []string
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the operator web console: overview, event tracer, dead letters, parked rows",
		Long: `console serves web pages for operators over one database (its outbox, inbox
and dead-letter tables) and one broker: an overview (backlog, oldest event,
parked rows, relay leader, CDC slot lag, dead letters per topic and group,
consumer lag per group from NATS JetStream, Kafka, RabbitMQ or Redis Streams), an event tracer (paste an event
id or a subject: outbox, broker, inbox rows of each group, dead letters,
payload), the dead letters (filter, show, replay, skip, purge) and the
parked outbox rows (requeue). Every page works offline (no CDN).

Every change asks for confirmation, is logged with who did it, and carries
a CSRF token. The console listens on localhost by default; to listen on
another address give --token (HTTP basic auth: any user name, the token as
password; or Authorization: Bearer <token>).

Settings come from flags, then EVENTKIT_* variables, then the YAML file
given by --config (or EVENTKIT_CONFIG), then the defaults; the file's keys
are the flag names, the console's own under "console:" (docs/config.md).
--print-config shows the result, the token and passwords redacted.`,
		Example: `  eventkit console --store postgres://postgres@127.0.0.1:5432/test --broker nats://127.0.0.1:4222
  EVENTKIT_CONSOLE_TOKEN=s3cret eventkit console --listen 0.0.0.0:8089 --store ... --broker ...

  # with a file, shared with the relay:
  cat >eventkit.yaml <<EOF
  store: postgres://console:CHANGE-ME@db.internal:5432/orders
  broker: nats://nats.internal:4222
  console:
    listen: 0.0.0.0:8089
    token: CHANGE-ME
    topic: [orders, payments]
  EOF
  eventkit console --config eventkit.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(listenAddr)
			if err != nil {
				return usageError{fmt.Errorf("--listen %q: %w", listenAddr, err), cmd.CommandPath()}
			}
			if !loopback(host) && token == "" {
				return usageError{fmt.Errorf("--listen %s is not a loopback address: give --token (or EVENTKIT_CONSOLE_TOKEN) so that the console is not open to anyone", listenAddr), cmd.CommandPath()}
			}
			ctx := cmd.Context()
			st, err := c.openStore(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			cfg := console.Config{DB: st.SQL, Dialect: st.Dialect, Outbox: st.Outbox, Pool: st.Pool, OutboxTable: c.outboxTable,
				InboxTable: c.inboxTable, DeadLetterTable: c.dlqTable, Topics: topics, Groups: groups, Token: token, Logger: g.logger()}
			if t, ok := st.Outbox.(interface{ Table() string }); ok && cfg.OutboxTable == "" {
				cfg.OutboxTable = t.Table()
			}
			if c.broker != "" {
				cfg.Broker = func(ctx context.Context) (broker.Broker, error) { return c.openBroker(ctx) }
			}
			con, err := console.New(cfg)
			if err != nil {
				return err
			}
			defer con.Close(context.Background())
			ln, err := listen(listenAddr)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: con, ReadHeaderTimeout: 10 * time.Second}
			g.logger().Info("console listening", "url", "http://"+ln.Addr().String()+"/", "auth", token != "")
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			<-errc
			return nil
		},
	}
	cmd.Flags().StringVar(&listenAddr, "listen", "127.0.0.1:8089", "address to listen on (a non-loopback address needs --token)")
	envFlag(cmd.Flags(), &token, "token", "EVENTKIT_CONSOLE_TOKEN", "", "token required on every request (basic auth password or Bearer)")
	cmd.Flags().StringSliceVar(&topics, "topic", nil, "topic the tracer searches and the overview shows, besides those the outbox wrote (repeatable)")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "consumer group whose lag the overview shows on Kafka, RabbitMQ and Redis, besides the inbox's consumers and the dead letters' groups (repeatable)")
	c.storeFlags(cmd)
	c.brokerFlag(cmd)
	withConfig(g, cmd)
	return cmd
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
