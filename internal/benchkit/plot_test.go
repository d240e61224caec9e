package benchkit

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func TestWriteHistogram(t *testing.T) {
	var lat []time.Duration
	for range 90 {
		lat = append(lat, 300*time.Microsecond)
	}
	for range 10 {
		lat = append(lat, 30*time.Millisecond)
	}
	var b strings.Builder
	WriteHistogram(&b, "publish", lat, 40)
	out := b.String()
	for _, want := range []string{"publish latency (100 samples)", "<= 500µs", "90  90.0% " + strings.Repeat("#", 40), "<= 50ms", "10  10.0% " + strings.Repeat("#", 5)} {
		if !strings.Contains(out, want) {
			t.Errorf("histogram lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "<= 50µs") {
		t.Errorf("empty leading buckets printed:\n%s", out)
	}
}

// TestWritePlotSVG: the chart is well-formed XML with one line per result
// in each panel, and names are escaped.
func TestWritePlotSVG(t *testing.T) {
	rs := []Result{
		{Name: "publish <a&b>", Timeline: []Point{{0, 0}, {100 * time.Millisecond, 1000}, {200 * time.Millisecond, 2500}},
			Latencies: []time.Duration{time.Millisecond, 2 * time.Millisecond, 9 * time.Millisecond}},
		{Name: "consume", Timeline: []Point{{0, 0}, {time.Second, 5000}}},
	}
	var b strings.Builder
	if err := WritePlotSVG(&b, "bench", rs); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(b.String()))
	lines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("not well-formed: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 3 { // 2 throughput + 1 latency
		t.Fatalf("%d polylines, want 3", lines)
	}
	if !strings.Contains(b.String(), "publish &lt;a&amp;b&gt;") {
		t.Fatal("name not escaped")
	}
}
