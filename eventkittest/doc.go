// Package eventkittest tests users' event handlers against the faults that
// eventkit's runtime survives. Guarantee: a Scenario passes Run only if,
// under every fault, the fault actually happened (RunFault fails a fault that
// injected nothing) and the user's Check accepts the end state. The faults
// are lost acks (a crash between the inbox commit and the ack), duplicates,
// concurrent duplicates, redelivery out of order, slow deliveries, failed
// publishes, a dropped connection and a crash between the handler and the
// commit.
//
// FaultBroker is the fault-injecting wrapper, usable around any
// broker.Broker (memory, NATS, Kafka, ...) in the user's own tests; its
// Stats count what was injected. Run and RunFault drive a handler through
// the consumer runtime with a real SQL inbox: SQLite in a temporary file by
// default, or the user's database (Scenario.DB). HandleInTx runs a handler
// once in an inbox transaction, for unit tests without a broker.
//
// Limits: a handler whose effects are writes in the inbox transaction
// passes; one with effects outside it (a counter, an e-mail, a write on
// another connection) fails at least CrashBeforeCommit, and any handler run
// with Scenario.NoInbox fails the redelivery faults unless it is idempotent
// by itself.
package eventkittest
