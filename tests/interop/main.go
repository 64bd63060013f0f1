// Command interop drives the released Go konnectivity-client library
// (sigs.k8s.io/apiserver-network-proxy/konnectivity-client) against a proxy-server
// and proxy-agent, the way kube-apiserver's egress selector uses it, and reports the
// outcome of ONE scenario as a single JSON line on stdout.
//
// Exit status 0 means the scenario behaved as expected, 1 means it did not.
//
// Frontend selection:
//
//	-uds PATH                       plaintext gRPC over a unix socket (kube-apiserver's usual setup)
//	-addr HOST:PORT -ca -cert -key  gRPC over TCP with mutual TLS
//
// Helper mode (not a scenario): -serve-blackhole prints "PORT\n" on stdout and keeps a
// loopback listener whose accept queue is full, so that connect() to it hangs (SYNs are
// dropped by the kernel). It runs until stdin is closed or the process is killed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/apiserver-network-proxy/konnectivity-client/pkg/client"
)

// options holds the command-line flags.
type options struct {
	uds        string
	addr       string
	ca         string
	cert       string
	key        string
	serverName string
	scenario   string
	target     string
	count      int
	cancelMs   int
	chunks     int
	size       int
	timeout    time.Duration
	blackhole  bool
}

var opts options

// result is printed as one JSON line.
type result struct {
	OK       bool                   `json:"ok"`
	Scenario string                 `json:"scenario"`
	Error    string                 `json:"error"`
	Reason   string                 `json:"reason"`
	Measure  map[string]interface{} `json:"measure"`
}

var (
	outMu   sync.Mutex
	printed bool
)

// finish prints the result once and exits.
func finish(r result) {
	outMu.Lock()
	if printed {
		outMu.Unlock()
		select {} // another goroutine is exiting
	}
	printed = true
	r.Scenario = opts.scenario
	if r.Measure == nil {
		r.Measure = map[string]interface{}{}
	}
	line, err := json.Marshal(r)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"ok":false,"error":%q}`, err.Error()))
	}
	os.Stdout.Write(append(line, '\n'))
	if r.OK {
		os.Exit(0)
	}
	os.Exit(1)
}

func fail(format string, args ...interface{}) result {
	return result{OK: false, Error: fmt.Sprintf(format, args...)}
}

// failDial is fail with the dial failure reason of err ("" when it is not a dial failure).
func failDial(err error, format string, args ...interface{}) result {
	r := fail(format, args...)
	r.Reason = reasonOf(err)
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	flag.StringVar(&opts.uds, "uds", "", "proxy-server frontend unix socket (plaintext gRPC)")
	flag.StringVar(&opts.addr, "addr", "", "proxy-server frontend HOST:PORT (gRPC over mTLS)")
	flag.StringVar(&opts.ca, "ca", "", "CA certificate (PEM) that signed the server certificate")
	flag.StringVar(&opts.cert, "cert", "", "client certificate (PEM)")
	flag.StringVar(&opts.key, "key", "", "client key (PEM)")
	flag.StringVar(&opts.serverName, "server-name", "", "TLS server name (default: host of -addr)")
	flag.StringVar(&opts.scenario, "scenario", "get", "get|refused|cancel-pending|concurrent|download|upload|close-client|close-remote|mid-transfer|big-dialid|single-use")
	flag.StringVar(&opts.target, "target", "", "HOST:PORT the agent should dial")
	flag.IntVar(&opts.count, "n", 0, "count: concurrent tunnels (concurrent, default 100) or sequential dials (big-dialid, default 50)")
	flag.IntVar(&opts.cancelMs, "cancel-after", 200, "cancel-pending: cancel the request context after this many ms")
	flag.IntVar(&opts.chunks, "chunks", 10, "download/upload/mid-transfer: number of chunks")
	flag.IntVar(&opts.size, "size", 1<<20, "download/upload/mid-transfer: chunk size in bytes")
	flag.DurationVar(&opts.timeout, "timeout", 60*time.Second, "overall deadline")
	flag.BoolVar(&opts.blackhole, "serve-blackhole", false, "helper: serve a loopback port whose connect() hangs")
	flag.Parse()

	if opts.blackhole {
		serveBlackhole()
		return
	}
	if (opts.uds == "") == (opts.addr == "") {
		finish(fail("exactly one of -uds or -addr is required"))
	}
	if opts.target == "" {
		finish(fail("-target is required"))
	}

	go func() {
		time.Sleep(opts.timeout)
		finish(fail("scenario %q exceeded the overall deadline of %s (hang)", opts.scenario, opts.timeout))
	}()

	var r result
	switch opts.scenario {
	case "get":
		r = scenarioGet(1)
	case "big-dialid":
		r = scenarioGet(defaultInt(opts.count, 50))
	case "refused":
		r = scenarioRefused()
	case "cancel-pending":
		r = scenarioCancelPending()
	case "concurrent":
		r = scenarioConcurrent(defaultInt(opts.count, 100))
	case "download":
		r = scenarioDownload()
	case "upload":
		r = scenarioUpload()
	case "close-client":
		r = scenarioCloseClient()
	case "close-remote":
		r = scenarioCloseRemote()
	case "mid-transfer":
		r = scenarioMidTransfer()
	case "single-use":
		r = scenarioSingleUse()
	default:
		r = fail("unknown scenario %q", opts.scenario)
	}
	finish(r)
}

func defaultInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// ---------------------------------------------------------------------------
// Tunnel creation, as kube-apiserver's egress selector does it.

// dialOptions returns the grpc.DialOptions for the selected frontend.
//
// UDS: like k8s.io/apiserver egressselector's udsGRPCConnector — a context dialer for the
// unix socket, insecure transport credentials, WithBlock + WithReturnConnectionError.
// TCP: mTLS transport credentials (the shape used by konnectivity's own test client).
func dialOptions() ([]grpc.DialOption, string, error) {
	if opts.uds != "" {
		path := opts.uds
		dialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		})
		return []grpc.DialOption{
			dialer,
			grpc.WithBlock(),
			grpc.WithReturnConnectionError(),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		}, path, nil
	}
	tlsConfig, err := clientTLSConfig()
	if err != nil {
		return nil, "", err
	}
	return []grpc.DialOption{
		grpc.WithBlock(),
		grpc.WithReturnConnectionError(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
	}, opts.addr, nil
}

func clientTLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.ca != "" {
		pem, err := os.ReadFile(opts.ca)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", opts.ca)
		}
		cfg.RootCAs = pool
	}
	if opts.cert != "" || opts.key != "" {
		pair, err := tls.LoadX509KeyPair(opts.cert, opts.key)
		if err != nil {
			return nil, fmt.Errorf("load client key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	cfg.ServerName = opts.serverName
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(opts.addr)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	return cfg, nil
}

// newTunnel creates one single-use tunnel. createCtx bounds only the gRPC connection set-up
// (kube-apiserver uses a 30 s bound); tunnelCtx bounds the tunnel's life.
func newTunnel(tunnelCtx context.Context) (client.Tunnel, error) {
	dopts, address, err := dialOptions()
	if err != nil {
		return nil, err
	}
	createCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.CreateSingleUseGrpcTunnelWithContext(createCtx, tunnelCtx, address, dopts...)
}

// dialResult describes one tunnel dial.
type dialResult struct {
	tunnel  client.Tunnel
	conn    net.Conn
	dialDur time.Duration
}

// dial creates a tunnel and dials target through it (one tunnel per connection, as
// kube-apiserver's egress dialer does).
func dial(ctx context.Context, target string) (*dialResult, error) {
	start := time.Now()
	tunnel, err := newTunnel(context.Background())
	if err != nil {
		return nil, fmt.Errorf("create tunnel: %w", err)
	}
	conn, err := tunnel.DialContext(ctx, "tcp", target)
	if err != nil {
		return &dialResult{tunnel: tunnel, dialDur: time.Since(start)}, err
	}
	return &dialResult{tunnel: tunnel, conn: conn, dialDur: time.Since(start)}, nil
}

// reasonOf returns the GetDialFailureReason of err ("" when it is not a dial failure).
func reasonOf(err error) string {
	if ok, reason := client.GetDialFailureReason(err); ok {
		return string(reason)
	}
	return ""
}

// waitDone waits for a tunnel's Done channel.
func waitDone(t client.Tunnel, within time.Duration) (time.Duration, bool) {
	start := time.Now()
	select {
	case <-t.Done():
		return time.Since(start), true
	case <-time.After(within):
		return time.Since(start), false
	}
}

// recordDone waits up to 5 s for a tunnel's Done channel and records the outcome in m
// (tunnel_done, tunnel_done_ms).
func recordDone(m map[string]interface{}, t client.Tunnel) bool {
	doneMs, done := waitDone(t, 5*time.Second)
	m["tunnel_done_ms"] = ms(doneMs)
	m["tunnel_done"] = done
	return done
}

// trackedConn records Close() results of a tunnel conn used by an http.Transport.
type trackedConn struct {
	net.Conn
	closeErr  atomic.Value
	closeDur  atomic.Int64
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *trackedConn) Close() error {
	start := time.Now()
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if err != nil {
			c.closeErr.Store(err.Error())
		}
		c.closeDur.Store(int64(time.Since(start)))
		close(c.closed)
	})
	return err
}

// tunnelTransport is an http.Transport whose every connection is a new single-use tunnel.
type tunnelTransport struct {
	mu      sync.Mutex
	dials   []*dialResult
	conns   []*trackedConn
	dialErr error
}

func (tt *tunnelTransport) transport() *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			d, err := dial(ctx, addr)
			tt.mu.Lock()
			defer tt.mu.Unlock()
			if err != nil {
				tt.dialErr = err
				return nil, err
			}
			tc := &trackedConn{Conn: d.conn, closed: make(chan struct{})}
			tt.dials = append(tt.dials, d)
			tt.conns = append(tt.conns, tc)
			return tc, nil
		},
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
}

// ---------------------------------------------------------------------------
// Scenarios.

// scenarioGet performs n sequential GET /success, each over a fresh tunnel, and checks
// that each conn closes cleanly and each tunnel ends.
func scenarioGet(n int) result {
	m := map[string]interface{}{}
	var dialMs, totalMs, closeMs []float64
	for i := 0; i < n; i++ {
		tt := &tunnelTransport{}
		tr := tt.transport()
		httpClient := &http.Client{Transport: tr}
		start := time.Now()
		resp, err := httpClient.Get("http://" + opts.target + "/success")
		if err != nil {
			r := failDial(tt.dialErr, "GET #%d: %v", i, err)
			r.Measure = m
			return r
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fail("GET #%d body: %v", i, err)
		}
		if resp.StatusCode != 200 || string(body) != "hello" {
			return fail("GET #%d: status %d body %q, want 200 \"hello\"", i, resp.StatusCode, body)
		}
		totalMs = append(totalMs, ms(time.Since(start)))
		tr.CloseIdleConnections()
		tt.mu.Lock()
		d, c := tt.dials[0], tt.conns[0]
		tt.mu.Unlock()
		dialMs = append(dialMs, ms(d.dialDur))
		select {
		case <-c.closed:
		case <-time.After(15 * time.Second):
			return fail("GET #%d: conn.Close() did not return within 15 s", i)
		}
		if e, _ := c.closeErr.Load().(string); e != "" {
			return fail("GET #%d: conn.Close() returned error %q", i, e)
		}
		closeMs = append(closeMs, ms(time.Duration(c.closeDur.Load())))
		if _, ok := waitDone(d.tunnel, 5*time.Second); !ok {
			return fail("GET #%d: tunnel.Done() not closed 5 s after conn.Close()", i)
		}
	}
	m["dials"] = n
	m["dial_ms_max"] = maxOf(dialMs)
	m["request_ms_max"] = maxOf(totalMs)
	m["close_ms_max"] = maxOf(closeMs)
	if n == 1 {
		m["dial_ms"] = dialMs[0]
		m["request_ms"] = totalMs[0]
		m["close_ms"] = closeMs[0]
	}
	return result{OK: true, Measure: m}
}

func maxOf(xs []float64) float64 {
	var best float64
	for _, x := range xs {
		if x > best {
			best = x
		}
	}
	return best
}

// scenarioRefused dials a closed port: the agent's dial error comes back as an endpoint failure.
func scenarioRefused() result {
	d, err := dial(context.Background(), opts.target)
	if err == nil {
		d.conn.Close()
		return fail("dial to %s unexpectedly succeeded", opts.target)
	}
	if d == nil {
		return fail("%v", err)
	}
	r := result{Error: err.Error(), Reason: reasonOf(err), Measure: map[string]interface{}{"dial_ms": ms(d.dialDur)}}
	done := recordDone(r.Measure, d.tunnel)
	r.OK = strings.Contains(err.Error(), "connection refused") && r.Reason == "endpoint" && done
	return r
}

// scenarioCancelPending cancels the request context while the agent is still dialing.
func scenarioCancelPending() result {
	tunnel, err := newTunnel(context.Background())
	if err != nil {
		return fail("create tunnel: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(opts.cancelMs)*time.Millisecond)
	defer cancel()
	start := time.Now()
	conn, err := tunnel.DialContext(ctx, "tcp", opts.target)
	elapsed := time.Since(start)
	if err == nil {
		conn.Close()
		return fail("dial to %s succeeded after %s; the target is not a blackhole", opts.target, elapsed)
	}
	r := result{Error: err.Error(), Reason: reasonOf(err), Measure: map[string]interface{}{
		"elapsed_ms":      ms(elapsed),
		"cancel_after_ms": opts.cancelMs,
	}}
	done := recordDone(r.Measure, tunnel)
	r.OK = r.Reason == "context" && done && elapsed < time.Duration(opts.cancelMs+2000)*time.Millisecond
	return r
}

// scenarioConcurrent runs n tunnels at once, each POSTing its index to /echo.
func scenarioConcurrent(n int) result {
	var wg sync.WaitGroup
	errs := make([]string, n)
	var okCount atomic.Int64
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tt := &tunnelTransport{}
			tr := tt.transport()
			defer tr.CloseIdleConnections()
			want := strconv.Itoa(i)
			resp, err := (&http.Client{Transport: tr}).Post("http://"+opts.target+"/echo", "text/plain", strings.NewReader(want))
			if err != nil {
				errs[i] = err.Error()
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				errs[i] = "body: " + err.Error()
				return
			}
			if string(body) != want {
				errs[i] = fmt.Sprintf("got %q, want %q", body, want)
				return
			}
			okCount.Add(1)
		}(i)
	}
	wg.Wait()
	r := result{Measure: map[string]interface{}{"n": n, "ok_count": okCount.Load(), "elapsed_ms": ms(time.Since(start))}}
	var bad []string
	for i, e := range errs {
		if e != "" {
			bad = append(bad, fmt.Sprintf("#%d: %s", i, e))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("... and %d more", len(bad)-5))
		}
		r.Error = strings.Join(bad, "; ")
	}
	r.OK = okCount.Load() == int64(n)
	return r
}

// patternByte is byte i of the test backend's download stream.
func patternByte(i int64) byte { return byte((i*7 + (i >> 11)) & 255) }

// patternReader produces total bytes of the pattern.
type patternReader struct{ off, total int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.total {
		return 0, io.EOF
	}
	n := int64(len(b))
	if rest := p.total - p.off; n > rest {
		n = rest
	}
	for j := int64(0); j < n; j++ {
		b[j] = patternByte(p.off + j)
	}
	p.off += n
	return int(n), nil
}

type adler struct{ a, b uint32 }

func (s *adler) update(p []byte) {
	for _, c := range p {
		s.a = (s.a + uint32(c)) % 65521
		s.b = (s.b + s.a) % 65521
	}
}

// scenarioDownload fetches chunks*size bytes and checks them byte for byte.
func scenarioDownload() result {
	total := int64(opts.chunks) * int64(opts.size)
	tt := &tunnelTransport{}
	tr := tt.transport()
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Get(fmt.Sprintf("http://%s/download?chunks=%d&size=%d", opts.target, opts.chunks, opts.size))
	if err != nil {
		return failDial(tt.dialErr, "GET /download: %v", err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 256*1024)
	var got int64
	mismatch := int64(-1)
	for {
		n, err := resp.Body.Read(buf)
		for j := 0; j < n && mismatch < 0; j++ {
			if buf[j] != patternByte(got+int64(j)) {
				mismatch = got + int64(j)
			}
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			r := fail("read after %d bytes: %v", got, err)
			r.Measure = map[string]interface{}{"bytes": got}
			return r
		}
	}
	elapsed := time.Since(start)
	r := result{Measure: map[string]interface{}{
		"bytes":        got,
		"expected":     total,
		"first_bad":    mismatch,
		"elapsed_ms":   ms(elapsed),
		"mib_per_s":    float64(got) / (1 << 20) / elapsed.Seconds(),
		"content_len":  resp.ContentLength,
		"status":       resp.StatusCode,
		"http_version": resp.Proto,
	}}
	switch {
	case resp.StatusCode != 200:
		r.Error = fmt.Sprintf("status %d", resp.StatusCode)
	case got != total:
		r.Error = fmt.Sprintf("got %d bytes, want %d", got, total)
	case mismatch >= 0:
		r.Error = fmt.Sprintf("byte %d differs from the pattern", mismatch)
	default:
		r.OK = true
	}
	return r
}

// scenarioUpload posts chunks*size pattern bytes and compares the backend's checksum.
func scenarioUpload() result {
	total := int64(opts.chunks) * int64(opts.size)
	var sum adler = adler{a: 1}
	tmp := make([]byte, 64*1024)
	pr := &patternReader{total: total}
	for {
		n, err := pr.Read(tmp)
		sum.update(tmp[:n])
		if err != nil {
			break
		}
	}
	want := fmt.Sprintf("%d %d:%d", total, sum.a, sum.b)

	tt := &tunnelTransport{}
	tr := tt.transport()
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("POST", "http://"+opts.target+"/upload", &patternReader{total: total})
	if err != nil {
		return fail("%v", err)
	}
	req.ContentLength = total
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return failDial(tt.dialErr, "POST /upload: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return fail("read response: %v", err)
	}
	r := result{Measure: map[string]interface{}{
		"bytes":      total,
		"got":        string(body),
		"want":       want,
		"elapsed_ms": ms(elapsed),
		"mib_per_s":  float64(total) / (1 << 20) / elapsed.Seconds(),
	}}
	if resp.StatusCode != 200 || string(body) != want {
		r.Error = fmt.Sprintf("status %d body %q, want %q", resp.StatusCode, body, want)
		return r
	}
	r.OK = true
	return r
}

// readFull reads exactly len(b) bytes or fails after within (the tunnel conn has no deadlines).
func readFull(c net.Conn, b []byte, within time.Duration) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(c, b)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		return fmt.Errorf("read of %d bytes did not complete within %s", len(b), within)
	}
}

// scenarioCloseClient talks to the echo backend, then closes from the client side.
func scenarioCloseClient() result {
	d, err := dial(context.Background(), opts.target)
	if err != nil {
		return failDial(err, "dial: %v", err)
	}
	m := map[string]interface{}{"dial_ms": ms(d.dialDur)}
	// Two round trips; the second reads in small pieces to exercise partial-packet buffering.
	for round, msg := range []string{"hello interop 0123456789", "second round: abcdefghijklmnopqrstuvwxyz"} {
		if _, err := d.conn.Write([]byte(msg)); err != nil {
			return fail("write round %d: %v", round, err)
		}
		got := make([]byte, 0, len(msg))
		piece := 10
		if round == 0 {
			piece = len(msg)
		}
		for len(got) < len(msg) {
			k := piece
			if rest := len(msg) - len(got); k > rest {
				k = rest
			}
			b := make([]byte, k)
			if err := readFull(d.conn, b, 10*time.Second); err != nil {
				return fail("read round %d: %v", round, err)
			}
			got = append(got, b...)
		}
		if string(got) != msg {
			return fail("round %d: echoed %q, want %q", round, got, msg)
		}
	}
	start := time.Now()
	closeErr := d.conn.Close()
	closeDur := time.Since(start)
	m["close_ms"] = ms(closeDur)
	done := recordDone(m, d.tunnel)
	r := result{Measure: m}
	switch {
	case closeErr != nil:
		r.Error = fmt.Sprintf("conn.Close() returned %q after %s", closeErr, closeDur)
	case closeDur >= client.CloseTimeout:
		r.Error = fmt.Sprintf("conn.Close() took %s", closeDur)
	case !done:
		r.Error = "tunnel.Done() not closed 5 s after conn.Close()"
	default:
		r.OK = true
	}
	return r
}

// scenarioCloseRemote asks the HTTP backend to close the connection and reads to EOF.
func scenarioCloseRemote() result {
	d, err := dial(context.Background(), opts.target)
	if err != nil {
		return failDial(err, "dial: %v", err)
	}
	m := map[string]interface{}{"dial_ms": ms(d.dialDur)}
	req := "GET /success HTTP/1.1\r\nHost: " + opts.target + "\r\nConnection: close\r\n\r\n"
	if _, err := d.conn.Write([]byte(req)); err != nil {
		return fail("write: %v", err)
	}
	start := time.Now()
	type readOut struct {
		data []byte
		err  error
	}
	ch := make(chan readOut, 1)
	go func() {
		data, err := io.ReadAll(d.conn) // returns at EOF (CLOSE_RSP from the agent)
		ch <- readOut{data, err}
	}()
	var out readOut
	select {
	case out = <-ch:
	case <-time.After(15 * time.Second):
		return fail("no EOF within 15 s after the remote closed (read hangs)")
	}
	m["eof_ms"] = ms(time.Since(start))
	m["bytes"] = len(out.data)
	resp, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(out.data)), nil)
	body := []byte{}
	if perr == nil {
		body, _ = io.ReadAll(resp.Body)
	}
	done := recordDone(m, d.tunnel)
	closeStart := time.Now()
	closeErr := d.conn.Close()
	m["close_ms"] = ms(time.Since(closeStart))
	if closeErr != nil {
		m["close_error"] = closeErr.Error()
	}
	r := result{Measure: m}
	switch {
	case out.err != nil:
		r.Error = fmt.Sprintf("read: %v", out.err)
	case perr != nil:
		r.Error = fmt.Sprintf("parse response %q: %v", out.data, perr)
	case string(body) != "hello":
		r.Error = fmt.Sprintf("body %q, want \"hello\"", body)
	case !done:
		r.Error = "tunnel.Done() not closed 5 s after EOF"
	default:
		r.OK = true
	}
	return r
}

// scenarioMidTransfer reads a very large download; after the first MiB it prints STARTED on
// stderr (the test then kills the agent) and expects the read to fail or end early promptly.
func scenarioMidTransfer() result {
	chunks := opts.chunks
	if chunks <= 10 {
		chunks = 2000
	}
	total := int64(chunks) * int64(opts.size)
	d, err := dial(context.Background(), opts.target)
	if err != nil {
		return failDial(err, "dial: %v", err)
	}
	req := fmt.Sprintf("GET /download?chunks=%d&size=%d HTTP/1.1\r\nHost: %s\r\n\r\n", chunks, opts.size, opts.target)
	if _, err := d.conn.Write([]byte(req)); err != nil {
		return fail("write: %v", err)
	}
	type readOut struct {
		n   int64
		err error
	}
	ch := make(chan readOut, 1)
	startedCh := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 256*1024)
		var n int64
		started := false
		for {
			k, err := d.conn.Read(buf)
			n += int64(k)
			if !started && n >= 1<<20 {
				started = true
				startedCh <- time.Now()
				fmt.Fprintln(os.Stderr, "STARTED")
			}
			if err != nil {
				ch <- readOut{n, err}
				return
			}
		}
	}()
	var startedAt time.Time
	select {
	case startedAt = <-startedCh:
	case out := <-ch:
		return fail("transfer ended before the first MiB: %d bytes, %v", out.n, out.err)
	case <-time.After(20 * time.Second):
		return fail("first MiB not received within 20 s")
	}
	var out readOut
	select {
	case out = <-ch:
	case <-time.After(20 * time.Second):
		return fail("read neither failed nor ended within 20 s after STARTED (hang)")
	}
	elapsed := time.Since(startedAt)
	m := map[string]interface{}{
		"bytes":              out.n,
		"total":              total,
		"after_started_ms":   ms(elapsed),
		"read_error_is_eof":  errors.Is(out.err, io.EOF),
		"read_error_message": fmt.Sprint(out.err),
	}
	done := recordDone(m, d.tunnel)
	r := result{Measure: m}
	// Raw bytes include the response header, so a complete transfer is > total.
	if out.n >= total {
		r.Error = fmt.Sprintf("the whole body arrived (%d bytes): the agent was not killed mid-transfer", out.n)
		return r
	}
	r.Error = fmt.Sprintf("transfer cut after %d of %d bytes: %v", out.n, total, out.err)
	r.OK = done
	if !done {
		r.Error += "; tunnel.Done() not closed 5 s later"
	}
	return r
}

// scenarioSingleUse checks the single-use contract: a second DialContext on a used tunnel
// fails locally with reason "tunnelstarted", and the first connection keeps working.
func scenarioSingleUse() result {
	d, err := dial(context.Background(), opts.target)
	if err != nil {
		return failDial(err, "dial: %v", err)
	}
	_, err2 := d.tunnel.DialContext(context.Background(), "tcp", opts.target)
	r := result{Measure: map[string]interface{}{}}
	if err2 == nil {
		r.Error = "second DialContext on a single-use tunnel succeeded"
		return r
	}
	r.Reason = reasonOf(err2)
	r.Measure["second_dial_error"] = err2.Error()
	if _, err := d.conn.Write([]byte("ping")); err != nil {
		r.Error = fmt.Sprintf("write after refused second dial: %v", err)
		return r
	}
	b := make([]byte, 4)
	if err := readFull(d.conn, b, 10*time.Second); err != nil || string(b) != "ping" {
		r.Error = fmt.Sprintf("echo after refused second dial: %q %v", b, err)
		return r
	}
	if err := d.conn.Close(); err != nil {
		r.Error = fmt.Sprintf("close: %v", err)
		return r
	}
	r.OK = r.Reason == "tunnelstarted"
	return r
}

// ---------------------------------------------------------------------------
// Blackhole helper.

// serveBlackhole listens on 127.0.0.1 with a backlog of 0 and fills the accept queue with
// connections it never accepts; the kernel then drops further SYNs, so connect() hangs.
func serveBlackhole() {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	must(err)
	must(syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	must(syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	must(err)
	port := sa.(*syscall.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// Fill the queue: connect until one attempt does not complete quickly.
	var held []net.Conn
	filled := false
	for i := 0; i < 16 && !filled; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			filled = true
			break
		}
		held = append(held, c)
	}
	if !filled {
		fmt.Fprintln(os.Stderr, "blackhole: accept queue never filled")
		os.Exit(1)
	}
	fmt.Printf("%d\n", port)
	os.Stdout.Sync()
	io.Copy(io.Discard, os.Stdin) // hold until stdin closes
	for _, c := range held {
		c.Close()
	}
	syscall.Close(fd)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "blackhole:", err)
		os.Exit(1)
	}
}
