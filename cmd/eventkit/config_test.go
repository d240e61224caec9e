package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/eventkit/eventkit/internal/redact"
)

// execRoot runs the command line on a root command with plain buffers:
// unlike run, nothing scrubs the output, so a test sees what the command
// itself prints.
func execRoot(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb, &errb)
	root.SetArgs(args)
	err = root.ExecuteContext(t.Context())
	return out.String(), err
}

// printed reads --print-config output back: for each key ("store",
// "relay.batch"), its value (a list joined by commas) and its source comment.
func printed(t *testing.T, out string) map[string][2]string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("--print-config is not YAML: %v\n%s", err, out)
	}
	m := map[string][2]string{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch v.Kind {
			case yaml.MappingNode:
				walk(v, prefix+k.Value+".")
			case yaml.SequenceNode:
				var items []string
				for _, it := range v.Content {
					items = append(items, it.Value)
				}
				m[prefix+k.Value] = [2]string{strings.Join(items, ","), strings.TrimPrefix(v.LineComment, "# ")}
			default:
				m[prefix+k.Value] = [2]string{v.Value, strings.TrimPrefix(v.LineComment, "# ")}
			}
		}
	}
	walk(doc.Content[0], "")
	return m
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigPrecedence sets the same keys in the file, the environment and
// on the command line, then removes one level at a time: the flag wins over
// the variable, the variable over the file, the file over the default. It
// covers a string whose variable is read when the flag is defined (store),
// typed keys whose variable withConfig adds (relay.batch, a list), a shared
// key of the root command (log-level), and the console's section.
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "eventkit.yaml", `# every level sets these
store: sqlite:///file.db
log-level: warn
relay:
  batch: 300
  collect-dlq: [file.dlq]
console:
  listen: 127.0.0.1:56801
`)
	type key struct {
		cmd, name, flag, env         string
		flagV, envV, fileV, defaultV string
		fileLine                     int
	}
	keys := []key{
		{"relay", "store", "--store=sqlite:///flag.db", "EVENTKIT_STORE", "sqlite:///flag.db", "sqlite:///env.db", "sqlite:///file.db", "", 2},
		{"relay", "log-level", "--log-level=debug", "EVENTKIT_LOG_LEVEL", "debug", "error", "warn", "info", 3},
		{"relay", "relay.batch", "--batch=100", "EVENTKIT_RELAY_BATCH", "100", "200", "300", "500", 5},
		{"relay", "relay.collect-dlq", "--collect-dlq=flag.dlq", "EVENTKIT_RELAY_COLLECT_DLQ", "flag.dlq", "env.dlq,env2.dlq", "file.dlq", "", 6},
		{"console", "console.listen", "--listen=127.0.0.1:56802", "EVENTKIT_CONSOLE_LISTEN", "127.0.0.1:56802", "127.0.0.1:56803", "127.0.0.1:56801", "127.0.0.1:8089", 8},
	}
	for _, k := range keys {
		for _, level := range []string{"flag", "env", "file", "default"} {
			args := []string{k.cmd, "--print-config"}
			if level == "flag" {
				args = append(args, k.flag)
			}
			if level == "flag" || level == "env" {
				t.Setenv(k.env, k.envV)
			} else {
				t.Setenv(k.env, "")
			}
			if level != "default" {
				args = append(args, "--config", file)
			}
			out, err := execRoot(t, args...)
			if err != nil {
				t.Fatalf("%v: %v", args, err)
			}
			got := printed(t, out)[k.name]
			want := map[string][2]string{
				"flag":    {k.flagV, "flag --" + k.name[strings.LastIndexByte(k.name, '.')+1:]},
				"env":     {k.envV, "env " + k.env},
				"file":    {k.fileV, "file " + file + ":" + strconv.Itoa(k.fileLine)},
				"default": {k.defaultV, "default"},
			}[level]
			if got != want {
				t.Errorf("%s with %s %v: got %q, want %q\n%s", k.name, level, args, got, want, out)
			}
		}
	}
}

// TestConfigValueUsed: a value from the file reaches the command itself,
// not only --print-config (the relay refuses the file's mode by name).
func TestConfigValueUsed(t *testing.T) {
	file := writeFile(t, "relay.yaml", "relay:\n  mode: sideways\n  listen: \"\"\n")
	_, err := execRoot(t, "relay", "--config", file, "--store", "sqlite://"+filepath.Join(t.TempDir(), "x.db"))
	if err == nil || !strings.Contains(err.Error(), `not "sideways"`) {
		t.Fatalf("relay with mode sideways in its file: %v", err)
	}
	t.Setenv("EVENTKIT_CONFIG", file)
	_, err = execRoot(t, "relay", "--store", "sqlite://"+filepath.Join(t.TempDir(), "x.db"))
	if err == nil || !strings.Contains(err.Error(), `not "sideways"`) {
		t.Fatalf("relay with EVENTKIT_CONFIG: %v", err)
	}
}

// TestConfigErrors: every mistake in a file is one usage error (exit 2)
// naming the file, the line and the key, and nothing runs.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ cmd, text, want string }{
		{"relay", "store: x.db\nrelay:\n  batchsize: 3\n", `:3: unknown key "relay.batchsize" (relay takes: batch,`},
		{"relay", "stor: x.db\n", `:1: unknown key "stor" (the top of the file takes: store,`},
		{"relay", "mode: cdc\n", `:1: unknown key "mode" at the top of the file: relay's "mode" goes under "relay:"`},
		{"relay", "console:\n  tokn: x\n", `:2: unknown key "console.tokn"`}, // the other command's section is checked too
		{"console", "relay:\n  store: x.db\n", `:2: key "store" belongs at the top of the file, not under "relay"`},
		{"relay", "relay:\n  batch: lots\n", `:2: relay.batch: want an integer, got "lots"`},
		{"relay", "relay:\n  batch: [1, 2]\n", `:2: relay.batch: want an integer, got a list`},
		{"relay", "relay:\n  migrate: sometimes\n", `:2: relay.migrate: want true or false, got "sometimes"`},
		{"relay", "relay:\n  poll-interval: 5\n", `:2: relay.poll-interval: want a duration such as 500ms, 10s or 1m, got "5"`},
		{"relay", "relay:\n  collect-dlq: {a: b}\n", `:2: relay.collect-dlq: want a string or a list of strings, got a mapping`},
		{"relay", "store:\n", `:1: store: no value (want a string)`},
		{"relay", "store: {host: db}\n", `:1: store: want a string, got a mapping`},
		{"relay", "relay: cdc\n", `:1: "relay": want a mapping of relay's settings`},
		{"relay", "store: a.db\nstore: b.db\n", `:2: key "store" given twice (first on line 1)`},
		{"relay", "- store\n", `:1: want a mapping of settings`},
		{"relay", "store: a.db\n---\nstore: b.db\n", `:2: a second YAML document`},
		{"relay", "store: [unclosed\n", `yaml:`},
		{"relay", "log-level: loud\n", `--log-level "loud": want debug, info, warn or error`},
	} {
		file := writeFile(t, "bad.yaml", tc.text)
		var out, errb bytes.Buffer
		code := run(t.Context(), []string{tc.cmd, "--config", file, "--print-config"}, &out, &errb)
		first := strings.SplitN(errb.String(), "\n", 2)[0]
		if code != 2 || !strings.Contains(first, tc.want) || out.Len() != 0 {
			t.Errorf("%s with %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.cmd, tc.text, code, out.String(), errb.String(), tc.want)
		}
		if strings.HasPrefix(tc.want, ":") && !strings.Contains(first, "config "+file+tc.want) {
			t.Errorf("%q: %q does not name the file and line", tc.text, first)
		}
	}
	// a bad value in a variable that withConfig added names the variable
	t.Setenv("EVENTKIT_RELAY_BATCH", "many")
	if _, err := execRoot(t, "relay", "--print-config"); err == nil || !strings.Contains(err.Error(), `EVENTKIT_RELAY_BATCH="many": want an integer`) {
		t.Errorf("EVENTKIT_RELAY_BATCH=many: %v", err)
	}
	t.Setenv("EVENTKIT_RELAY_BATCH", "")
	// a missing file
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	for _, args := range [][]string{{"relay", "--config", missing}, {"console", "--print-config", "--config=" + missing}} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "config file: open "+missing+": no such file") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb.String())
		}
	}
	// an empty file, or one of comments only, sets nothing
	for _, text := range []string{"", "# nothing yet\n"} {
		if _, err := execRoot(t, "relay", "--print-config", "--config", writeFile(t, "empty.yaml", text)); err != nil {
			t.Errorf("file %q: %v", text, err)
		}
	}
}

// TestPrintConfigRedacts plants a password in the store's user info and
// query, a token in the broker's user info, and the console token, from
// the file, the environment and the flags in turn: --print-config never
// prints it, on the bare root command (no Scrubber) nor through run; and it
// opens nothing (no SQLite file appears).
func TestPrintConfigRedacts(t *testing.T) {
	const secret = "Pl4ntedS3cr3t"
	dir := t.TempDir()
	db := filepath.Join(dir, "never.db")
	store := "postgres://relay:" + secret + "@127.0.0.1:1/orders?sslmode=disable&password=" + secret
	storeSQLite := "sqlite://u:" + secret + "@" + db + "?auth_token=" + secret
	broker := "nats://" + secret + "@127.0.0.1:1"
	brokerAMQP := "amqp://guest:" + secret + "@127.0.0.1:1/?token=" + secret
	file := writeFile(t, "secret.yaml", "store: "+store+"\nbroker: "+broker+"\nconsole:\n  token: "+secret+"\n")
	envs := []string{"EVENTKIT_STORE", "EVENTKIT_BROKER", "EVENTKIT_CONSOLE_TOKEN"}
	type source struct {
		name string
		env  map[string]string
		args []string
	}
	for _, src := range []source{
		{"file", nil, []string{"--config", file}},
		{"env", map[string]string{"EVENTKIT_STORE": storeSQLite, "EVENTKIT_BROKER": brokerAMQP, "EVENTKIT_CONSOLE_TOKEN": secret}, nil},
		{"flag", nil, []string{"--store", storeSQLite, "--broker", brokerAMQP}},
		{"all", map[string]string{"EVENTKIT_STORE": store}, []string{"--config", file, "--broker=" + brokerAMQP}},
	} {
		for _, e := range envs {
			t.Setenv(e, src.env[e])
		}
		for _, cmd := range []string{"relay", "console"} {
			args := append([]string{cmd, "--print-config"}, src.args...)
			if cmd == "console" && src.name == "flag" {
				args = append(args, "--token", secret)
			}
			out, err := execRoot(t, args...)
			if err != nil {
				t.Fatalf("%s %v: %v", src.name, args, err)
			}
			if strings.Contains(out, secret) || !strings.Contains(out, "xxxxx") {
				t.Errorf("%s: %v printed the secret (or masked nothing):\n%s", src.name, args, out)
			}
			var o, e bytes.Buffer
			if code := run(t.Context(), args, &o, &e); code != 0 || strings.Contains(o.String()+e.String(), secret) {
				t.Errorf("%s: run %v: exit %d, output holds the secret: %s%s", src.name, args, code, o.String(), e.String())
			}
			if cmd == "console" && !regexp.MustCompile(`token: xxxxx # (file|env|flag)`).MatchString(out) {
				t.Errorf("%s: console token not shown masked with its source:\n%s", src.name, out)
			}
		}
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatalf("--print-config created %s", db)
	}
}

// TestConfigSecretsScrubbed: a secret that only the file holds is known to
// run's Scrubber, like those of the arguments and the environment, so a
// library that quotes a URL from the file cannot print it.
func TestConfigSecretsScrubbed(t *testing.T) {
	const secret = "Fil3OnlyS3cret"
	file := writeFile(t, "s.yaml", "store: postgres://u:"+secret+"@db/x\nconsole:\n  token: "+secret+"tok\n")
	got := configSecrets([]string{"console", "--config", file})
	var out bytes.Buffer
	w := redact.NewScrubber(got...).Writer(&out)
	_, _ = w.Write([]byte("dial postgres://u:" + secret + "@db/x failed; token " + secret + "tok\n"))
	if strings.Contains(out.String(), secret) {
		t.Fatalf("the Scrubber built from the file let a secret through: %q", out.String())
	}
	t.Setenv("EVENTKIT_CONFIG", file)
	if len(configSecrets([]string{"relay"})) == 0 {
		t.Fatal("EVENTKIT_CONFIG's file not read for the Scrubber")
	}
}

// TestDeployRelayConfig: the sample file the systemd unit names is a valid
// configuration of the relay, and the unit runs the relay with it.
func TestDeployRelayConfig(t *testing.T) {
	unit, err := os.ReadFile("../../deploy/systemd/eventkit-relay.service")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ExecStart=\S+ relay --config %d/relay\.yaml\b`).Match(unit) ||
		!regexp.MustCompile(`(?m)^LoadCredential=relay\.yaml:/etc/eventkit/relay\.yaml$`).Match(unit) {
		t.Fatalf("the unit does not run the relay with /etc/eventkit/relay.yaml:\n%s", unit)
	}
	out, err := execRoot(t, "relay", "--config", "../../deploy/systemd/relay.yaml", "--print-config")
	if err != nil {
		t.Fatal(err)
	}
	if p := printed(t, out); !strings.HasPrefix(p["store"][1], "file ") || !strings.HasPrefix(p["relay.mode"][1], "file ") {
		t.Errorf("deploy/systemd/relay.yaml sets neither store nor relay.mode:\n%s", out)
	}
	if strings.Contains(out, "CHANGE-ME") {
		t.Errorf("the sample's placeholder password was printed:\n%s", out)
	}
}

// TestConfigSharedKeys: the keys at the top of the file mean the same in
// relay and console (same flag, same variable), and every other flag of
// either has a variable of its own.
func TestConfigSharedKeys(t *testing.T) {
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{}, &bytes.Buffer{})
	envs := map[string]string{}
	for _, name := range configSections {
		c, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		fs := c.Flags()
		fs.AddFlagSet(root.PersistentFlags())
		for _, k := range sharedKeys {
			fl := fs.Lookup(k)
			if fl == nil || envOf(fl) == "" {
				t.Fatalf("%s has no flag --%s with a variable", name, k)
			}
			if prev, ok := envs[k]; ok && prev != envOf(fl) {
				t.Errorf("--%s: variable %s in one command, %s in the other", k, prev, envOf(fl))
			}
			envs[k] = envOf(fl)
		}
		for _, k := range keysOf(fs) {
			if envOf(fs.Lookup(k)) == "" {
				t.Errorf("%s --%s has no variable", name, k)
			}
		}
	}
}

// TestConfigDocExample: the full example file of docs/config.md is accepted
// by both commands and names every key they take.
func TestConfigDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/config.md has %d yaml blocks, want the one full example", len(blocks))
	}
	file := writeFile(t, "example.yaml", string(blocks[0][1]))
	for _, cmd := range configSections {
		out, err := execRoot(t, cmd, "--config", file, "--print-config")
		if err != nil {
			t.Fatalf("%s with the example of docs/config.md: %v", cmd, err)
		}
		for k, v := range printed(t, out) {
			if !strings.HasPrefix(v[1], "file ") {
				t.Errorf("%s: the example does not set %s", cmd, k)
			}
		}
	}
}
