package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	natsbroker "github.com/eventkit/eventkit/broker/natsbroker"
	"github.com/eventkit/eventkit/internal/redact"
)

// tlsFiles builds a TLS configuration that verifies the server against the
// CA certificates in caFile (the system roots when caFile is "") and, when
// certFile is set, presents that client certificate with keyFile's key.
func tlsFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CA file: %v", ErrBadURL, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrBadURL, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both its certificate and its key file", ErrBadURL)
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrBadURL, redact.URL(err.Error()))
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// tlsFor returns a copy of cfg whose ServerName, if empty, is u's host (for
// a single host; with a host list the client sets it per server). nil stays
// nil.
func tlsFor(cfg *tls.Config, u *url.URL) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" && !strings.Contains(u.Host, ",") {
		h := u.Host
		if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
			h = h[:i]
		}
		cfg.ServerName = strings.Trim(h, "[]")
	}
	return cfg
}

// take removes the named parameters from q and returns their values.
func take(q url.Values, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = q.Get(n)
		q.Del(n)
	}
	return out
}

// unknownParams fails for parameters left in q after the known ones were
// taken: a misspelt sslrootcert must not silently mean "no CA".
func unknownParams(q url.Values, scheme string) error {
	if len(q) == 0 {
		return nil
	}
	var names []string
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	return fmt.Errorf("%w: %s URL: unknown parameter %s (see docs/security.md)", ErrBadURL, scheme, strings.Join(names, ", "))
}

// natsOptions reads the nats CLI's settings from the URL's parameters:
// creds (a credentials file) and nkey (an NKey seed file), which it puts
// into o for natsbroker to check and use, and tlsca, tlscert and tlskey.
// User and password, or a token, are the URL's user info, which nats.go
// reads itself.
func natsOptions(q url.Values, cfg *tls.Config, u *url.URL, o *natsbroker.Options) error {
	v := take(q, "creds", "nkey", "tlsca", "tlscert", "tlskey")
	ca, cert, key := v[2], v[3], v[4]
	o.CredentialsFile, o.NKeySeedFile = v[0], v[1]
	if cfg == nil && (ca != "" || cert != "" || key != "") {
		var err error
		if cfg, err = tlsFiles(ca, cert, key); err != nil {
			return err
		}
	}
	if cfg != nil {
		o.NATSOptions = append(o.NATSOptions, nats.Secure(tlsFor(cfg, u)))
	}
	return nil
}

// kafkaOptions reads librdkafka's settings from the URL's parameters:
// security.protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
// sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), sasl.username and
// sasl.password (or the URL's user info), ssl.ca.location,
// ssl.certificate.location and ssl.key.location.
func kafkaOptions(q url.Values, u *url.URL, cfg *tls.Config) ([]kgo.Opt, error) {
	v := take(q, "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
		"ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
	proto, mech, user, pass, ca, cert, key := strings.ToUpper(v[0]), strings.ToUpper(v[1]), v[2], v[3], v[4], v[5], v[6]
	if u.User != nil {
		if user != "" {
			return nil, fmt.Errorf("%w: kafka URL: the user is given twice (user info and sasl.username)", ErrBadURL)
		}
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	files := ca != "" || cert != "" || key != ""
	if proto == "" {
		switch {
		case mech != "" && (files || cfg != nil):
			proto = "SASL_SSL"
		case mech != "":
			proto = "SASL_PLAINTEXT"
		case files || cfg != nil:
			proto = "SSL"
		default:
			proto = "PLAINTEXT"
		}
	}
	useTLS, useSASL := false, false
	switch proto {
	case "PLAINTEXT":
	case "SSL":
		useTLS = true
	case "SASL_PLAINTEXT":
		useSASL = true
	case "SASL_SSL":
		useTLS, useSASL = true, true
	default:
		return nil, fmt.Errorf("%w: kafka URL: security.protocol %q: want PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", ErrBadURL, v[0])
	}
	var opts []kgo.Opt
	if useTLS {
		if cfg == nil {
			var err error
			if cfg, err = tlsFiles(ca, cert, key); err != nil {
				return nil, err
			}
		}
		opts = append(opts, kgo.DialTLSConfig(tlsFor(cfg, u)))
	} else if files {
		return nil, fmt.Errorf("%w: kafka URL: ssl.* files given with security.protocol=%s", ErrBadURL, proto)
	}
	if !useSASL {
		if user != "" || mech != "" {
			return nil, fmt.Errorf("%w: kafka URL: credentials given without SASL: set sasl.mechanism=PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrBadURL)
		}
		return opts, nil
	}
	if user == "" {
		return nil, fmt.Errorf("%w: kafka URL: SASL needs a user (kafka://user:password@host or sasl.username)", ErrBadURL)
	}
	var m sasl.Mechanism
	switch mech {
	case "PLAIN":
		m = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	default:
		return nil, fmt.Errorf("%w: kafka URL: sasl.mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrBadURL, v[1])
	}
	return append(opts, kgo.SASL(m)), nil
}

// redisTLS reads redis-cli's TLS settings from the URL's parameters: cacert,
// cert and key. They need rediss:// (or WithTLS); the user name and password
// of an ACL user are the URL's user info, which go-redis reads itself.
func redisTLS(q url.Values, u *url.URL, cfg *tls.Config) (*tls.Config, error) {
	v := take(q, "cacert", "cert", "key")
	files := v[0] != "" || v[1] != "" || v[2] != ""
	if files && u.Scheme != "rediss" {
		return nil, fmt.Errorf("%w: redis URL: cacert, cert and key need rediss://", ErrBadURL)
	}
	if cfg == nil && (files || u.Scheme == "rediss") {
		var err error
		if cfg, err = tlsFiles(v[0], v[1], v[2]); err != nil {
			return nil, err
		}
	}
	return tlsFor(cfg, u), nil
}

// mysqlConfig turns mysql://user:pass@host:port/db?params into a
// go-sql-driver configuration. Besides the driver's own parameters it reads
// the mysql client's ssl-ca, ssl-cert, ssl-key and ssl-mode (DISABLED,
// PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY; VERIFY_IDENTITY when
// ssl-ca is given).
func mysqlConfig(raw string, cfg *tls.Config) (*mysqldrv.Config, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: %q: want mysql://user:pass@host:3306/db", ErrBadURL, redact.URL(raw))
	}
	q := u.Query()
	v := take(q, "ssl-ca", "ssl-cert", "ssl-key", "ssl-mode")
	ca, cert, key, mode := v[0], v[1], v[2], strings.ToUpper(v[3])
	c := mysqldrv.NewConfig()
	c.User = u.User.Username()
	c.Passwd, _ = u.User.Password()
	c.Net = "tcp"
	c.Addr = u.Host
	c.DBName = strings.TrimPrefix(u.Path, "/")
	c.ParseTime = true
	c.Params = map[string]string{}
	for k, vs := range q {
		c.Params[k] = vs[0]
	}
	// The driver's own parameters (tls, timeout, charset, ...) are read
	// by ParseDSN; the others stay session variables.
	c, err = mysqldrv.ParseDSN(c.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, redact.URL(raw), redact.Err(err, raw))
	}
	files := ca != "" || cert != "" || key != ""
	if mode == "" && (files || cfg != nil) {
		mode = "VERIFY_IDENTITY"
	}
	switch mode {
	case "":
		return c, nil
	case "DISABLED":
		if files || cfg != nil {
			return nil, fmt.Errorf("%w: mysql URL: ssl-mode=DISABLED with TLS files", ErrBadURL)
		}
		c.TLS, c.TLSConfig = nil, "false"
		return c, nil
	case "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY":
	default:
		return nil, fmt.Errorf("%w: mysql URL: ssl-mode %q: want DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY", ErrBadURL, v[3])
	}
	if cfg == nil {
		if cfg, err = tlsFiles(ca, cert, key); err != nil {
			return nil, err
		}
	}
	cfg = tlsFor(cfg, u)
	switch mode {
	case "PREFERRED", "REQUIRED":
		if ca != "" {
			return nil, fmt.Errorf("%w: mysql URL: ssl-ca given with ssl-mode=%s, which does not verify it: use VERIFY_CA or VERIFY_IDENTITY", ErrBadURL, mode)
		}
		cfg.InsecureSkipVerify = true
	case "VERIFY_CA":
		verifyChainOnly(cfg)
	}
	c.TLS = cfg
	c.TLSConfig = ""
	c.AllowFallbackToPlaintext = mode == "PREFERRED"
	return c, nil
}

// verifyChainOnly makes cfg verify the server's certificate chain against
// its roots but not the host name (libpq's verify-ca, MySQL's VERIFY_CA).
func verifyChainOnly(cfg *tls.Config) {
	roots := cfg.RootCAs
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: the server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}

// amqpOptions reads RabbitMQ's URI query parameters: cacertfile, certfile,
// keyfile and server_name_indication (they need amqps://, or WithTLS) and
// auth_mechanism (plain, amqplain or external: the client certificate's
// name is the user, plugin rabbitmq_auth_mechanism_ssl). It removes the TLS
// ones from q and leaves auth_mechanism, heartbeat, connection_timeout and
// channel_max, which amqp091-go reads itself; anything else is an error. It
// returns the TLS configuration (nil for a plain amqp:// URL).
func amqpOptions(q url.Values, u *url.URL, cfg *tls.Config) (*tls.Config, error) {
	v := take(q, "cacertfile", "certfile", "keyfile", "server_name_indication")
	ca, cert, key, sni := v[0], v[1], v[2], v[3]
	if (ca != "" || cert != "" || key != "" || sni != "") && u.Scheme != "amqps" {
		return nil, fmt.Errorf("%w: amqp URL: cacertfile, certfile, keyfile and server_name_indication need amqps://", ErrBadURL)
	}
	if cfg == nil && u.Scheme == "amqps" {
		var err error
		if cfg, err = tlsFiles(ca, cert, key); err != nil {
			return nil, err
		}
	}
	if cfg != nil {
		cfg = cfg.Clone()
		if sni != "" {
			cfg.ServerName = sni
		}
		cfg = tlsFor(cfg, u)
	}
	rest := url.Values{}
	for _, k := range []string{"auth_mechanism", "heartbeat", "connection_timeout", "channel_max"} {
		if vs, ok := q[k]; ok {
			rest[k] = vs
			delete(q, k)
		}
	}
	if err := unknownParams(q, "amqp"); err != nil {
		return nil, err
	}
	for _, m := range rest["auth_mechanism"] {
		switch strings.ToLower(m) {
		case "plain", "amqplain":
		case "external":
			if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil) {
				return nil, fmt.Errorf("%w: amqp URL: auth_mechanism=external needs amqps:// with a client certificate (certfile and keyfile)", ErrBadURL)
			}
			if u.User != nil {
				return nil, fmt.Errorf("%w: amqp URL: auth_mechanism=external takes the user from the client certificate: leave user:password@ out", ErrBadURL)
			}
		default:
			return nil, fmt.Errorf("%w: amqp URL: auth_mechanism %q: want plain, amqplain or external", ErrBadURL, m)
		}
	}
	for k, vs := range rest {
		q[k] = vs
	}
	return cfg, nil
}
