package benchkit

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClientCPU returns the CPU time (user + system) this process has used so
// far, from getrusage(RUSAGE_SELF). An in-process server (kfake, an
// embedded nats-server) is counted here.
func ClientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Server is a server process running on this machine, found by the port it
// listens on or by its name. Its CPU time is that of the whole process
// tree: a PostgreSQL postmaster with its backends (live ones from their
// /proc/<pid>/stat, ended ones through the postmaster's cutime and
// cstime), nats-server, redis-server, beam.smp or mariadbd alone.
type Server struct {
	PID  int
	Name string // the process's comm, as in /proc/<pid>/comm
}

// ServerAt finds the local process listening on addr's TCP port when addr
// (host:port, or a URL holding one) names this machine. ok is false when
// the server is remote or the process cannot be found (not root, another
// PID namespace): then no server CPU is reported, not a wrong one.
func ServerAt(addr string) (Server, bool) {
	host, port, ok := hostPort(addr)
	if !ok || !isLocal(host) {
		return Server{}, false
	}
	inodes := listeningInodes(port)
	if len(inodes) == 0 {
		return Server{}, false
	}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			link, err := os.Readlink(dir + "/fd/" + fd.Name())
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				return Server{PID: pid, Name: comm(pid)}, true
			}
		}
	}
	return Server{}, false
}

// CPU returns the CPU time the server's process tree has used so far.
func (s Server) CPU() time.Duration {
	procs := readProcs()
	children := map[int][]int{}
	byPID := map[int]proc{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
		byPID[p.pid] = p
	}
	var ticks uint64
	stack := []int{s.PID}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if p, ok := byPID[pid]; ok {
			ticks += p.ticks
		}
		stack = append(stack, children[pid]...)
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

type proc struct {
	pid, ppid int
	comm      string
	ticks     uint64 // utime + stime + cutime + cstime
}

func readProcs() []proc {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	out := make([]proc, 0, len(dirs))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if p, ok := procByPID(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func procByPID(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	return parseStat(b)
}

// parseStat reads pid, comm, ppid and the four CPU times of a
// /proc/<pid>/stat line. comm is in parentheses and may hold spaces and
// parentheses itself, so the fields after it are found from the last ')'.
func parseStat(b []byte) (proc, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return proc{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return proc{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	if len(f) < 15 {
		return proc{}, false
	}
	p := proc{pid: pid, comm: string(b[open+1 : end])}
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return proc{}, false
	}
	for _, s := range f[11:15] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return proc{}, false
		}
		p.ticks += v
	}
	return p, true
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// hostPort takes host:port, or a URL (scheme://[user@]host:port/...), and
// returns its host and port; a URL without a port gets its scheme's.
func hostPort(addr string) (host string, port int, ok bool) {
	if i := strings.Index(addr, "://"); i >= 0 {
		scheme := addr[:i]
		rest := addr[i+3:]
		if j := strings.IndexAny(rest, "/?"); j >= 0 {
			rest = rest[:j]
		}
		if j := strings.LastIndexByte(rest, '@'); j >= 0 {
			rest = rest[j+1:]
		}
		if j := strings.IndexByte(rest, ','); j >= 0 { // the first of a list
			rest = rest[:j]
		}
		if _, _, err := net.SplitHostPort(rest); err != nil {
			def, ok := defaultPorts[scheme]
			if !ok {
				return "", 0, false
			}
			rest = net.JoinHostPort(strings.Trim(rest, "[]"), strconv.Itoa(def))
		}
		addr = rest
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, false
	}
	return h, n, true
}

var defaultPorts = map[string]int{
	"nats": 4222, "postgres": 5432, "postgresql": 5432, "redis": 6379,
	"amqp": 5672, "kafka": 9092, "mysql": 3306, "mariadb": 3306,
}

func isLocal(host string) bool {
	if host == "" || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// listeningInodes returns the socket inodes of the TCP sockets listening
// on port (IPv4 and IPv6).
func listeningInodes(port int) map[string]bool {
	out := map[string]bool{}
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			x := strings.Fields(sc.Text())
			// sl local rem st tx:rx tr:when retr uid timeout inode
			if len(x) < 10 || x[3] != "0A" || !strings.HasSuffix(x[1], want) {
				continue
			}
			out[x[9]] = true
		}
		fh.Close()
	}
	return out
}

// Meter samples the CPU time of this process and of local servers.
type Meter struct {
	Servers []Server
}

// NewMeter returns a Meter of this process and of the local servers behind
// addrs (URLs or host:port; remote ones are left out).
func NewMeter(addrs ...string) *Meter {
	m := &Meter{}
	seen := map[int]bool{}
	for _, a := range addrs {
		if s, ok := ServerAt(a); ok && !seen[s.PID] {
			seen[s.PID] = true
			m.Servers = append(m.Servers, s)
		}
	}
	return m
}

// CPUSample is the CPU time used up to one moment.
type CPUSample struct {
	Client time.Duration
	Server []time.Duration // per Meter.Servers
}

// Sample reads the CPU times now.
func (m *Meter) Sample() CPUSample {
	s := CPUSample{Client: ClientCPU()}
	if m != nil {
		for _, srv := range m.Servers {
			s.Server = append(s.Server, srv.CPU())
		}
	}
	return s
}

// CPUUsed is the CPU time used between two samples.
type CPUUsed struct {
	Client time.Duration
	// Server is the sum over the metered servers; HasServer is false when
	// none is metered (remote servers).
	Server    time.Duration
	HasServer bool
	// PerServer is each metered server's share of Server, in the order of
	// Meter.Servers.
	PerServer []time.Duration
}

// Since returns the CPU used from s0 to s.
func (s CPUSample) Since(s0 CPUSample) CPUUsed {
	u := CPUUsed{Client: s.Client - s0.Client}
	for i := range min(len(s.Server), len(s0.Server)) {
		d := s.Server[i] - s0.Server[i]
		u.Server += d
		u.PerServer = append(u.PerServer, d)
		u.HasServer = true
	}
	return u
}

// ServerNames names the metered servers, e.g. "nats-server+postgres".
func (m *Meter) ServerNames() string {
	if m == nil {
		return ""
	}
	var n []string
	for _, s := range m.Servers {
		n = append(n, s.Name)
	}
	return strings.Join(n, "+")
}
