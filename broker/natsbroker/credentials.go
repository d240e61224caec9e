package natsbroker

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ErrCredentials is wrapped by Connect's errors about an unusable
// Options.CredentialsFile or Options.NKeySeedFile (missing, unreadable, or
// not holding what it should). The errors never show the file's content.
var ErrCredentials = errors.New("natsbroker: unusable credentials")

// credentialOptions checks the credentials file and the NKey seed file and
// returns the nats options that authenticate with them.
func credentialOptions(credsFile, seedFile string) ([]nats.Option, error) {
	var opts []nats.Option
	if credsFile != "" {
		b, err := readSecret(credsFile, "credentials file")
		if err != nil {
			return nil, err
		}
		_, jerr := nkeys.ParseDecoratedJWT(b)
		kp, kerr := nkeys.ParseDecoratedUserNKey(b)
		wipe(b)
		if jerr != nil || kerr != nil {
			return nil, fmt.Errorf("%w: credentials file %s holds no user JWT and NKey seed (as `nsc generate creds` writes them)", ErrCredentials, credsFile)
		}
		kp.Wipe()
		opts = append(opts, nats.UserCredentials(credsFile))
	}
	if seedFile != "" {
		b, err := readSecret(seedFile, "NKey seed file")
		if err != nil {
			return nil, err
		}
		kp, kerr := nkeys.ParseDecoratedNKey(b)
		wipe(b)
		if kerr != nil {
			return nil, fmt.Errorf("%w: NKey seed file %s holds no NKey seed (SU...)", ErrCredentials, seedFile)
		}
		kp.Wipe()
		o, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: NKey seed file %s: not a user seed", ErrCredentials, seedFile)
		}
		opts = append(opts, o)
	}
	return opts, nil
}

func readSecret(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCredentials, what, err)
	}
	return b, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
