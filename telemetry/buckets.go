package telemetry

// LatencyBuckets returns the histogram bucket boundaries, in seconds, that
// every eventkit latency histogram uses: 0.5 ms to 60 s, roughly three per
// decade, so that quantiles are useful from a local broker's sub-millisecond
// publish to a minute-long handler. Each call returns a new slice.
func LatencyBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

// LagBuckets returns the bucket boundaries, in seconds, for how late
// events are (eventkit.consumer.lag): LatencyBuckets and on to an hour, so
// that a lag over a minute is still measured.
func LagBuckets() []float64 {
	return append(LatencyBuckets(), 120, 300, 600, 1800, 3600)
}
