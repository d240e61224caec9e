package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func init() { commands = append(commands, versionCmd) }

// buildVersion describes this binary: the module version it was built from
// (a tag, a pseudo-version, or "(devel)" for a work tree), the VCS revision
// and time when the build recorded them, and the Go version. A version set
// with -ldflags "-X main.version=..." takes precedence over the module's.
func buildVersion(info *debug.BuildInfo, ok bool) string {
	v := version
	var rev, when string
	modified := false
	if ok {
		if v == "dev" && info.Main.Version != "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	b.WriteString(v)
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(&b, " (revision %s", rev)
		if modified {
			b.WriteString(", modified")
		}
		if when != "" {
			fmt.Fprintf(&b, ", %s", when)
		}
		b.WriteString(")")
	}
	goVersion := runtime.Version()
	if ok && info.GoVersion != "" {
		goVersion = info.GoVersion
	}
	fmt.Fprintf(&b, " %s %s/%s", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the eventkit version, VCS revision and Go version",
		Long: `version prints the module version eventkit was built from (a release tag,
a pseudo-version, or (devel) for a build from a work tree), the VCS revision
and commit time when the build recorded them, and the Go toolchain.

  eventkit version
  eventkit --version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, ok := debug.ReadBuildInfo()
			_, err := fmt.Fprintf(g.stdout, "eventkit %s\n", buildVersion(info, ok))
			return err
		},
	}
}
