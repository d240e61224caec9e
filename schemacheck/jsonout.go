package schemacheck

import (
	"encoding/json"
	"io"
)

// reportJSON is `check --json`, in the eventkit command's JSON style
// (snake_case keys, null for an absent value).
type reportJSON struct {
	Lock     string        `json:"lock"`
	OK       bool          `json:"ok"`
	Findings []findingJSON `json:"findings"`
	Notes    []string      `json:"notes"`
}

type findingJSON struct {
	Type    string  `json:"type"`
	Version string  `json:"version"`
	Path    *string `json:"path"` // null for the registration itself
	Rule    string  `json:"rule"`
	Message string  `json:"message"`
}

func writeReportJSON(w io.Writer, lock string, r *Report) error {
	out := reportJSON{Lock: lock, OK: r.OK(), Findings: []findingJSON{}, Notes: r.Notes}
	if out.Notes == nil {
		out.Notes = []string{}
	}
	for _, f := range r.Findings {
		j := findingJSON{Type: f.Type, Version: f.Version, Rule: f.Rule, Message: f.Message}
		if f.Path != "" {
			p := f.Path
			j.Path = &p
		}
		out.Findings = append(out.Findings, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
