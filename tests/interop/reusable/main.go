// Command interop-reusable drives the reusable tunnel API of the Go konnectivity-client
// (CreateGRPCTunnel, first released in v0.37.0) against a proxy-server and proxy-agent: one
// gRPC ClientConn, one new Proxy stream per DialContext. It is a separate module because the
// main interop module pins the v0.36 release line, which has no reusable tunnel.
//
// It prints one JSON line {"ok","error","reason","measure"} and exits 0 on success.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/apiserver-network-proxy/konnectivity-client/pkg/client"
)

type result struct {
	OK       bool                   `json:"ok"`
	Scenario string                 `json:"scenario"`
	Error    string                 `json:"error"`
	Reason   string                 `json:"reason"`
	Measure  map[string]interface{} `json:"measure"`
}

func emit(r result) {
	r.Scenario = "reusable"
	if r.Measure == nil {
		r.Measure = map[string]interface{}{}
	}
	line, _ := json.Marshal(r)
	os.Stdout.Write(append(line, '\n'))
	if r.OK {
		os.Exit(0)
	}
	os.Exit(1)
}

func main() {
	uds := flag.String("uds", "", "proxy-server frontend unix socket (plaintext gRPC)")
	addr := flag.String("addr", "", "proxy-server frontend HOST:PORT (gRPC over mTLS)")
	ca := flag.String("ca", "", "CA certificate (PEM)")
	cert := flag.String("cert", "", "client certificate (PEM)")
	key := flag.String("key", "", "client key (PEM)")
	target := flag.String("target", "", "HTTP backend HOST:PORT (routes /success and /echo)")
	refused := flag.String("refused", "", "HOST:PORT with nothing listening")
	n := flag.Int("n", 50, "concurrent dials on the one tunnel")
	timeout := flag.Duration("timeout", 60*time.Second, "overall deadline")
	flag.Parse()

	go func() {
		time.Sleep(*timeout)
		emit(result{Error: fmt.Sprintf("exceeded the overall deadline of %s (hang)", *timeout)})
	}()

	// Count transport connections: a reusable tunnel must use exactly one.
	var transports atomic.Int64
	var dopts []grpc.DialOption
	address := *addr
	if *uds != "" {
		path := *uds
		address = path
		dopts = append(dopts,
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				transports.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		pem, err := os.ReadFile(*ca)
		if err != nil {
			emit(result{Error: err.Error()})
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pem)
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			emit(result{Error: err.Error()})
		}
		cfg.Certificates = []tls.Certificate{pair}
		cfg.ServerName, _, _ = net.SplitHostPort(*addr)
		dopts = append(dopts,
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
				transports.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, "tcp", a)
			}),
			grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	dopts = append(dopts, grpc.WithBlock(), grpc.WithReturnConnectionError())

	createCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tunnel, err := client.CreateGRPCTunnel(createCtx, address, dopts...)
	if err != nil {
		emit(result{Error: "CreateGRPCTunnel: " + err.Error()})
	}
	m := map[string]interface{}{}
	fail := func(format string, args ...interface{}) {
		r := result{Error: fmt.Sprintf(format, args...), Measure: m}
		emit(r)
	}

	// Every HTTP connection is a fresh DialContext on the same tunnel (keep-alives off).
	var dials atomic.Int64
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
			dials.Add(1)
			return tunnel.DialContext(ctx, "tcp", a)
		},
		DisableKeepAlives: true,
	}
	hc := &http.Client{Transport: tr}
	get := func() error {
		resp, err := hc.Get("http://" + *target + "/success")
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if string(body) != "hello" {
			return fmt.Errorf("body %q", body)
		}
		return nil
	}

	// 1. Sequential dials.
	for i := 0; i < 5; i++ {
		if err := get(); err != nil {
			fail("sequential GET #%d: %v", i, err)
		}
	}
	// 2. Concurrent dials: many Proxy streams at once on one HTTP/2 connection.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]string, *n)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := strconv.Itoa(i)
			resp, err := hc.Post("http://"+*target+"/echo", "text/plain", strings.NewReader(want))
			if err != nil {
				errs[i] = err.Error()
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != want {
				errs[i] = fmt.Sprintf("got %q (%v), want %q", body, err, want)
			}
		}(i)
	}
	wg.Wait()
	m["concurrent_ms"] = float64(time.Since(start).Microseconds()) / 1000
	for i, e := range errs {
		if e != "" {
			fail("concurrent #%d: %s", i, e)
		}
	}
	// 3. A failed dial is per-dial: reason endpoint, and the tunnel stays usable.
	if *refused != "" {
		_, err := tunnel.DialContext(context.Background(), "tcp", *refused)
		if err == nil {
			fail("dial to %s succeeded", *refused)
		}
		_, reason := client.GetDialFailureReason(err)
		m["refused_error"] = err.Error()
		m["refused_reason"] = string(reason)
		if reason != "endpoint" || !strings.Contains(err.Error(), "connection refused") {
			fail("refused dial: %v (reason %q)", err, reason)
		}
		if err := get(); err != nil {
			fail("GET after a failed dial: %v", err)
		}
	}
	select {
	case <-tunnel.Done():
		fail("Done() fired before Close()")
	default:
	}
	// 4. Close drains every child stream and fires Done.
	closeStart := time.Now()
	closeErr := tunnel.Close()
	m["close_ms"] = float64(time.Since(closeStart).Microseconds()) / 1000
	select {
	case <-tunnel.Done():
	case <-time.After(5 * time.Second):
		fail("Done() not closed after Close()")
	}
	m["dials"] = dials.Load()
	m["transport_connections"] = transports.Load()
	if closeErr != nil {
		fail("Close(): %v", closeErr)
	}
	if transports.Load() != 1 {
		fail("%d transport connections, want 1", transports.Load())
	}
	emit(result{OK: true, Measure: m})
}
