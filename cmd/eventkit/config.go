package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/eventkit/eventkit/internal/redact"
)

// The configuration file of relay and console (docs/config.md): YAML whose
// keys are the commands' flag names. The settings both commands share sit
// at the top; each command's own settings sit under its name:
//
//	store: postgres://relay@db:5432/orders
//	broker: nats://nats:4222
//	relay:
//	  mode: cdc
//	  batch: 1000
//	console:
//	  listen: 127.0.0.1:8089
//
// Every setting is read, in order of precedence, from its flag, its
// EVENTKIT_* variable, the file, or else its default.

// sharedKeys are the settings at the top of the file: the same flag, with
// the same variable and meaning, in relay and console.
var sharedKeys = []string{"store", "broker", "outbox-table", "inbox-table", "dlq-table", "log-level", "log-format"}

// configSections are the commands that read the file, by their section.
var configSections = []string{"relay", "console"}

// secretKeys are shown as redact.Mask, whole; urlKeys through redact.URL.
var (
	secretKeys = map[string]bool{"token": true}
	urlKeys    = map[string]bool{"store": true, "broker": true}
)

// notConfig are the flags a file cannot set.
var notConfig = map[string]bool{"config": true, "print-config": true, "help": true}

// envAnnotation names a flag's EVENTKIT_* variable (set by envFlag and
// withConfig).
const envAnnotation = "eventkit-env"

// configOpts are the --config and --print-config flags of one command.
type configOpts struct {
	path  string
	print bool
}

// withConfig gives cmd (a command named in configSections) --config and
// --print-config, an EVENTKIT_<SECTION>_<FLAG> variable for each flag that
// has none yet, and a RunE that applies the file and the variables before
// the command's own RunE runs (or instead, with --print-config). Call it
// after the command's flags are defined.
func withConfig(g *globals, cmd *cobra.Command) {
	section := cmd.Name()
	o := &configOpts{}
	f := cmd.Flags()
	envFlag(f, &o.path, "config", "EVENTKIT_CONFIG", "", "YAML file of settings (docs/config.md); flags and EVENTKIT_* variables override it")
	f.BoolVar(&o.print, "print-config", false, "print the effective settings as YAML, secrets redacted, each with where it came from (flag, env, file, default), and exit")
	f.VisitAll(func(fl *pflag.Flag) {
		if notConfig[fl.Name] || envOf(fl) != "" {
			return
		}
		env := "EVENTKIT_" + strings.ToUpper(section+"_"+strings.ReplaceAll(fl.Name, "-", "_"))
		_ = f.SetAnnotation(fl.Name, envAnnotation, []string{env})
		fl.Usage += " (env " + env + ")"
	})
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		eff, err := applyConfig(c, o.path)
		if err != nil {
			return usageError{err, c.CommandPath()}
		}
		if err := g.check(); err != nil { // the file or a variable may have set them
			return usageError{err, c.CommandPath()}
		}
		if o.print {
			return eff.print(c.OutOrStdout())
		}
		return run(c, args)
	}
}

// envOf is the flag's EVENTKIT_* variable, or "".
func envOf(fl *pflag.Flag) string {
	if v := fl.Annotations[envAnnotation]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// setting is one effective setting and where it came from.
type setting struct {
	flag   *pflag.Flag
	source string // "flag --x", "env EVENTKIT_X", "file path:line" or "default"
}

// effective is a command's settings after applyConfig.
type effective struct {
	command  string
	file     string
	shared   []setting
	sections []setting
}

// fileValue is a setting read from the file.
type fileValue struct {
	node *yaml.Node
	key  string // as shown in errors: "store", "relay.batch"
}

// applyConfig sets every flag of c that its command line left alone from
// its variable, else from the file at path (if any), and says where each
// value came from. Errors name the file and line, or the variable.
func applyConfig(c *cobra.Command, path string) (*effective, error) {
	vals := map[string]fileValue{}
	if path != "" {
		var err error
		if vals, err = readConfig(c, path); err != nil {
			return nil, err
		}
	}
	eff := &effective{command: c.CommandPath(), file: path}
	var err error
	c.Flags().VisitAll(func(fl *pflag.Flag) {
		if err != nil || notConfig[fl.Name] {
			return
		}
		s := setting{flag: fl, source: "default"}
		env := envOf(fl)
		fv, inFile := vals[fl.Name]
		switch {
		case fl.Changed:
			s.source = "flag --" + fl.Name
		case env != "" && os.Getenv(env) != "":
			s.source = "env " + env
			if e := fl.Value.Set(os.Getenv(env)); e != nil {
				err = fmt.Errorf("%s=%q: want %s", env, shown(fl, os.Getenv(env)), typeWanted(fl))
			}
		case inFile:
			s.source = fmt.Sprintf("file %s:%d", path, fv.node.Line)
			if e := setFromYAML(fl, fv.node); e != nil {
				err = fmt.Errorf("config %s:%d: %s: %w", path, fv.node.Line, fv.key, e)
			}
		}
		if isShared(fl.Name) {
			eff.shared = append(eff.shared, s)
		} else {
			eff.sections = append(eff.sections, s)
		}
	})
	if err != nil {
		return nil, err
	}
	order := func(name string) int {
		for i, k := range sharedKeys {
			if k == name {
				return i
			}
		}
		return len(sharedKeys)
	}
	sort.SliceStable(eff.shared, func(i, j int) bool { return order(eff.shared[i].flag.Name) < order(eff.shared[j].flag.Name) })
	return eff, nil
}

func isShared(name string) bool {
	for _, k := range sharedKeys {
		if k == name {
			return true
		}
	}
	return false
}

// readConfig parses the file and checks every key against the flags of the
// command each section belongs to; it returns the settings for c by flag
// name.
func readConfig(c *cobra.Command, path string) (map[string]fileValue, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]fileValue{}, nil // an empty file sets nothing
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s:%d: a second YAML document; the file must hold one", path, more.Line)
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return map[string]fileValue{}, nil // comments only
	}
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s:%d: want a mapping of settings (key: value)", path, top.Line)
	}
	out := map[string]fileValue{}
	seen := map[string]int{}
	pairs := func(m *yaml.Node, prefix string, each func(k, v *yaml.Node) error) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("config %s:%d: a key must be a name", path, k.Line)
			}
			if line, dup := seen[prefix+k.Value]; dup {
				return fmt.Errorf("config %s:%d: key %q given twice (first on line %d)", path, k.Line, prefix+k.Value, line)
			}
			seen[prefix+k.Value] = k.Line
			if err := each(k, v); err != nil {
				return err
			}
		}
		return nil
	}
	err = pairs(top, "", func(k, v *yaml.Node) error {
		name := k.Value
		if isSection(name) {
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			if v.Kind != yaml.MappingNode {
				return fmt.Errorf("config %s:%d: %q: want a mapping of %s's settings", path, v.Line, name, name)
			}
			cmdFlags := sectionFlags(c, name)
			return pairs(v, name+".", func(k, v *yaml.Node) error {
				switch {
				case isShared(k.Value):
					return fmt.Errorf("config %s:%d: key %q belongs at the top of the file, not under %q", path, k.Line, k.Value, name)
				case cmdFlags == nil: // a command this binary does not know: nothing to check against
					return nil
				case notConfig[k.Value] || cmdFlags.Lookup(k.Value) == nil:
					return fmt.Errorf("config %s:%d: unknown key %q (%s takes: %s)", path, k.Line, name+"."+k.Value, name, strings.Join(keysOf(cmdFlags), ", "))
				}
				if name == c.Name() {
					out[k.Value] = fileValue{node: v, key: name + "." + k.Value}
				}
				return nil
			})
		}
		if isShared(name) {
			out[name] = fileValue{node: v, key: name}
			return nil
		}
		for _, s := range configSections {
			if fs := sectionFlags(c, s); fs != nil && !notConfig[name] && fs.Lookup(name) != nil {
				return fmt.Errorf("config %s:%d: unknown key %q at the top of the file: %s's %q goes under %q", path, k.Line, name, s, name, s+":")
			}
		}
		return fmt.Errorf("config %s:%d: unknown key %q (the top of the file takes: %s, %s)", path, k.Line, name,
			strings.Join(sharedKeys, ", "), strings.Join(configSections, ", "))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func isSection(name string) bool {
	for _, s := range configSections {
		if s == name {
			return true
		}
	}
	return false
}

// sectionFlags are the flags of the command named section (c itself, or
// its sibling), nil if this binary has no such command.
func sectionFlags(c *cobra.Command, section string) *pflag.FlagSet {
	if c.Name() == section {
		return c.Flags()
	}
	for _, s := range c.Root().Commands() {
		if s.Name() == section {
			return s.Flags()
		}
	}
	return nil
}

// keysOf lists the keys a section takes.
func keysOf(fs *pflag.FlagSet) []string {
	var ks []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if !notConfig[fl.Name] && !isShared(fl.Name) {
			ks = append(ks, fl.Name)
		}
	})
	return ks
}

// setFromYAML sets fl from a YAML value: a scalar, or for a list flag a
// scalar or a sequence of scalars.
func setFromYAML(fl *pflag.Flag, n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	want := fmt.Errorf("want %s", typeWanted(fl))
	if sv, ok := fl.Value.(pflag.SliceValue); ok && n.Kind == yaml.SequenceNode {
		items := make([]string, 0, len(n.Content))
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				return want
			}
			items = append(items, it.Value)
		}
		if err := sv.Replace(items); err != nil {
			return fmt.Errorf("%w: %v", want, err)
		}
		return nil
	}
	switch {
	case n.Kind == yaml.SequenceNode:
		return fmt.Errorf("%w, got a list", want)
	case n.Kind == yaml.MappingNode:
		return fmt.Errorf("%w, got a mapping", want)
	case n.Tag == "!!null":
		return fmt.Errorf("no value (%s); remove the key for the default", want)
	}
	if err := fl.Value.Set(n.Value); err != nil {
		return fmt.Errorf("%w, got %q", want, shown(fl, n.Value))
	}
	return nil
}

// typeWanted says in words what a flag takes.
func typeWanted(fl *pflag.Flag) string {
	switch t := fl.Value.Type(); t {
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "bool":
		return "true or false"
	case "duration":
		return "a duration such as 500ms, 10s or 1m"
	case "string":
		return "a string"
	case "stringSlice", "stringArray":
		return "a string or a list of strings"
	default:
		return "a " + t
	}
}

// shown is how a value of fl may appear in output: secrets masked, URLs
// redacted (internal/redact, the one redactor).
func shown(fl *pflag.Flag, v string) string {
	switch {
	case v == "":
		return v
	case secretKeys[fl.Name]:
		return redact.Mask
	case urlKeys[fl.Name] || strings.Contains(v, "://") || strings.Contains(v, "@"):
		return redact.URL(v)
	}
	return v
}

// print writes the effective settings as a YAML configuration file, each
// value commented with its source.
func (e *effective) print(w io.Writer) error {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	doc.HeadComment = fmt.Sprintf("Effective settings of %s (secrets redacted).\nPrecedence: flag > env (EVENTKIT_*) > file > default.", e.command)
	if e.file != "" {
		doc.HeadComment += "\nFile: " + e.file
	}
	for _, s := range e.shared {
		doc.Content = append(doc.Content, keyNode(s.flag.Name), valueNode(s))
	}
	sec := &yaml.Node{Kind: yaml.MappingNode}
	for _, s := range e.sections {
		sec.Content = append(sec.Content, keyNode(s.flag.Name), valueNode(s))
	}
	name := e.command[strings.LastIndexByte(e.command, ' ')+1:]
	doc.Content = append(doc.Content, keyNode(name), sec)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

func keyNode(k string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k} }

// valueNode is a setting's value as YAML, typed as the flag is.
func valueNode(s setting) *yaml.Node {
	fl := s.flag
	n := &yaml.Node{Kind: yaml.ScalarNode, LineComment: s.source}
	if sv, ok := fl.Value.(pflag.SliceValue); ok {
		n.Kind, n.Style = yaml.SequenceNode, yaml.FlowStyle
		for _, it := range sv.GetSlice() {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: shown(fl, it)})
		}
		return n
	}
	n.Value = shown(fl, fl.Value.String())
	switch fl.Value.Type() {
	case "int", "int64", "int32", "uint", "uint64":
		n.Tag = "!!int"
	case "bool":
		n.Tag = "!!bool"
	default:
		n.Tag = "!!str"
	}
	return n
}

// configSecrets returns the values in the configuration file that args or
// EVENTKIT_CONFIG name, as "key=value" and as given, for run's Scrubber: a
// client library quoting a URL from the file must not print its password
// either. A file that cannot be read yields nothing (the command reports it).
func configSecrets(args []string) []string {
	path := os.Getenv("EVENTKIT_CONFIG")
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			path = v
		} else if a == "--config" && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return nil
	}
	var out []string
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, key)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], n.Content[i].Value)
			}
		case yaml.ScalarNode:
			out = append(out, n.Value, key+"="+n.Value) // "token=x": Secrets finds a bare secret by its key
		}
	}
	walk(&doc, "")
	return out
}
