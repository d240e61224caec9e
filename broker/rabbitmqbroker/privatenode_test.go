package rabbitmqbroker_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/eventkit/eventkit/internal/testenv"
)

// privateNodeCtl is how the restart and memory-alarm tests reach the
// server they disrupt: EVENTKIT_RABBITMQ_CTL is a command that runs
// rabbitmqctl on a private node (scripts/test.sh sets it to
// "bash scripts/rabbitnode.sh ctl DIR" and EVENTKIT_RABBITMQ_URL to that
// node). Without it the test fails: a bare rabbitmqctl would restart the
// machine's own RabbitMQ, which no test may do.
func privateNodeCtl(t *testing.T) []string {
	t.Helper()
	ctl := strings.Fields(os.Getenv("EVENTKIT_RABBITMQ_CTL"))
	if len(ctl) == 0 {
		t.Fatal("EVENTKIT_RABBITMQ_CTL is not set: these tests restart the server, so they run only on a private node: " +
			"url=$(bash scripts/rabbitnode.sh start /tmp/ek-rabbit 31672); EVENTKIT_RABBITMQ_URL=$url " +
			"EVENTKIT_RABBITMQ_CTL=\"bash $PWD/scripts/rabbitnode.sh ctl /tmp/ek-rabbit\" EVENTKIT_RABBITMQ_RESTART=1 go test ...; " +
			"bash scripts/rabbitnode.sh stop /tmp/ek-rabbit")
	}
	if os.Getenv(testenv.RabbitMQ.EnvVar) == "" {
		t.Fatalf("EVENTKIT_RABBITMQ_CTL is set but %s is not: set it to the private node's URL", testenv.RabbitMQ.EnvVar)
	}
	return ctl
}

// rabbitmqctl runs rabbitmqctl args on the private node.
func rabbitmqctl(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctl := privateNodeCtl(t)
	out, err := exec.Command(ctl[0], append(ctl[1:], args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", strings.Join(ctl, " "), strings.Join(args, " "), err)
	}
	return out, nil
}
