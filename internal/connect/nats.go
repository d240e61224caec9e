package connect

import (
	"context"
	"log/slog"

	"github.com/eventkit/eventkit/broker"
	natsbroker "github.com/eventkit/eventkit/broker/nats"
)

func openNATS(ctx context.Context, url string, log *slog.Logger) (broker.Broker, error) {
	return natsbroker.Connect(ctx, url, natsbroker.Options{Name: "eventkit", Logger: log})
}
