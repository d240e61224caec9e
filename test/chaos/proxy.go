package main

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP fault proxy on loopback: it forwards every connection it
// accepts to upstream, and on demand cuts connections (a TCP reset on both
// sides) or stalls them (stops forwarding bytes, in both directions, for a
// while, keeping the connections open).
type proxy struct {
	name     string
	upstream string
	ln       net.Listener

	mu    sync.Mutex
	conns map[*pconn]struct{}
	gate  chan struct{} // closed while not stalled
	done  bool

	cuts, stalls atomic.Int64
	wg           sync.WaitGroup
}

type pconn struct{ client, server net.Conn }

func (c *pconn) reset() {
	for _, n := range []net.Conn{c.client, c.server} {
		if tc, ok := n.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN: as a crashed peer or a broken network looks
		}
		_ = n.Close()
	}
}

func newProxy(name, listen, upstream string) (*proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	open := make(chan struct{})
	close(open)
	p := &proxy{name: name, upstream: upstream, ln: ln, conns: map[*pconn]struct{}{}, gate: open}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &pconn{client: c, server: s}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			pc.reset()
			return
		}
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s)
		go p.pipe(pc, s, c)
	}
}

// pipe copies from src to dst, waiting at the gate before each write.
func (p *proxy) pipe(pc *pconn, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		_ = src.Close()
		_ = dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

// Cut resets one connection at random, or all of them; it returns how many.
func (p *proxy) Cut(all bool) int {
	p.mu.Lock()
	var victims []*pconn
	for c := range p.conns {
		victims = append(victims, c)
	}
	p.mu.Unlock()
	if len(victims) == 0 {
		return 0
	}
	if !all {
		victims = victims[rand.IntN(len(victims)):][:1]
	}
	for _, c := range victims {
		c.reset()
	}
	p.cuts.Add(int64(len(victims)))
	return len(victims)
}

// Stall stops forwarding on every connection for d (new connections are
// accepted, and stall at their first byte).
func (p *proxy) Stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	g := make(chan struct{})
	old := p.gate
	p.gate = g
	p.stalls.Add(1)
	time.AfterFunc(d, func() {
		p.mu.Lock()
		if p.gate == g {
			p.gate = old
		}
		p.mu.Unlock()
		close(g)
	})
}

// Close stops accepting, resets every connection and waits for the pipes.
func (p *proxy) Close() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut(true)
	p.wg.Wait()
}
