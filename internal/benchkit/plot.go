package benchkit

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// bucketBounds are the upper bounds of the histogram's buckets: 1-2-5 steps
// from 50 µs to 50 s.
var bucketBounds = func() []time.Duration {
	var b []time.Duration
	for d := 10 * time.Microsecond; d <= 10*time.Second; d *= 10 {
		b = append(b, 5*d, 10*d, 20*d)
	}
	return b
}()

// WriteHistogram prints a text histogram of lat: one line per non-empty
// bucket (from the first to the last), its upper bound, count, share and a
// bar of width at most width.
func WriteHistogram(w io.Writer, title string, lat []time.Duration, width int) {
	if len(lat) == 0 {
		return
	}
	counts := make([]int, len(bucketBounds)+1)
	for _, d := range lat {
		i, _ := slices.BinarySearch(bucketBounds, d)
		counts[i]++
	}
	first, last := -1, 0
	most := 0
	for i, c := range counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
			most = max(most, c)
		}
	}
	fmt.Fprintf(w, "%s latency (%d samples)\n", title, len(lat))
	for i := first; i <= last; i++ {
		label := "> " + fmtDur(bucketBounds[len(bucketBounds)-1])
		if i < len(bucketBounds) {
			label = "<= " + fmtDur(bucketBounds[i])
		}
		bar := strings.Repeat("#", (counts[i]*width+most-1)/most)
		fmt.Fprintf(w, "  %10s %8d %5.1f%% %s\n", label, counts[i], 100*float64(counts[i])/float64(len(lat)), bar)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%gµs", float64(d)/float64(time.Microsecond))
	}
}

// plotPercentiles are the latency percentiles a plot shows.
var plotPercentiles = []float64{50, 75, 90, 95, 99, 99.9, 100}

// percentile returns the p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// WritePlotSVG writes an SVG chart of results: on the left, each result's
// throughput over time (events/s between timeline samples); on the right,
// its latency percentiles (p50 to max, in ms). Results without a timeline
// or latencies are left out of that panel.
func WritePlotSVG(w io.Writer, title string, results []Result) error {
	const W, H, pw, ph, top, left = 960, 420, 380, 300, 60, 70
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="24" font-size="15">%s</text>`+"\n", left, html.EscapeString(title))
	// Throughput series.
	type series struct {
		name string
		x, y []float64
	}
	var thr, lat []series
	for _, r := range results {
		s := series{name: r.Name}
		for i := 1; i < len(r.Timeline); i++ {
			a, c := r.Timeline[i-1], r.Timeline[i]
			if dt := (c.At - a.At).Seconds(); dt > 0 {
				s.x = append(s.x, c.At.Seconds())
				s.y = append(s.y, float64(c.Done-a.Done)/dt)
			}
		}
		if len(s.x) > 0 {
			thr = append(thr, s)
		}
		if len(r.Latencies) > 0 {
			sorted := slices.Clone(r.Latencies)
			slices.Sort(sorted)
			l := series{name: r.Name}
			for i, p := range plotPercentiles {
				l.x = append(l.x, float64(i))
				l.y = append(l.y, float64(percentile(sorted, p))/float64(time.Millisecond))
			}
			lat = append(lat, l)
		}
	}
	panel := func(x0 int, heading, xlabel, ylabel string, ss []series, xticks []string) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13">%s</text>`+"\n", x0, top-10, heading)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, top, pw, ph)
		if len(ss) == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#666">not measured</text>`+"\n", x0+pw/2-40, top+ph/2)
			return
		}
		var xmax, ymax float64
		for _, s := range ss {
			for i := range s.x {
				xmax, ymax = math.Max(xmax, s.x[i]), math.Max(ymax, s.y[i])
			}
		}
		if xmax == 0 {
			xmax = 1
		}
		ymax = niceCeil(ymax)
		px := func(x float64) float64 { return float64(x0) + x/xmax*pw }
		py := func(y float64) float64 { return float64(top+ph) - y/ymax*ph }
		for i := 0; i <= 4; i++ {
			y := ymax * float64(i) / 4
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0, x0+pw, py(y), py(y), x0-4, py(y)+4, shortNum(y))
		}
		if xticks != nil {
			for i, t := range xticks {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(float64(i)), top+ph+16, t)
			}
		} else {
			for i := 0; i <= 4; i++ {
				x := xmax * float64(i) / 4
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(x), top+ph+16, shortNum(x))
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+pw/2, top+ph+34, xlabel)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" transform="rotate(-90 %d %d)">%s</text>`+"\n", x0-50, top+ph/2, x0-50, top+ph/2, ylabel)
		for i, s := range ss {
			pts := make([]string, len(s.x))
			for j := range s.x {
				pts[j] = fmt.Sprintf("%.1f,%.1f", px(s.x[j]), py(s.y[j]))
			}
			c := plotColors[i%len(plotColors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x0+8, top+16+14*i, c, html.EscapeString(s.name))
		}
	}
	ticks := make([]string, len(plotPercentiles))
	for i, p := range plotPercentiles {
		ticks[i] = fmt.Sprintf("p%g", p)
		if p == 100 {
			ticks[i] = "max"
		}
	}
	panel(left, "throughput over time", "seconds", "events/s", thr, nil)
	panel(left+pw+110, "latency percentiles", "percentile", "ms", lat, ticks)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e5)/10)
	case v >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v/1e2)/10)
	default:
		return fmt.Sprintf("%g", math.Round(v*100)/100)
	}
}
