// Command goclient is the bench's measuring client for the gRPC frontend, built on the Go
// konnectivity-client v0.36.0 (the library kube-apiserver links). It speaks the same protocol as
// bench/client.ts: one JSON command per line on stdin, one JSON answer per line on stdout
// ({"id":1,"ok":true,"result":{...}} or {"id":1,"ok":false,"error":"..."}), one command at a
// time, and it exits when stdin ends. Targets are "direct" (TCP to the backend) or "grpc" (a
// single-use tunnel over the server's UDS per connection, as kube-apiserver dials).
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/apiserver-network-proxy/konnectivity-client/pkg/client"
)

const (
	chunk    = 256 * 1024
	echoSize = 32
	endless  = uint64(1<<53 - 1)
	ack      = 0x4b
)

type target struct {
	Via     string `json:"via"`
	UdsPath string `json:"udsPath"`
	Port    int    `json:"port"`
}

type command struct {
	ID            int     `json:"id"`
	Op            string  `json:"op"`
	Target        target  `json:"target"`
	Direction     string  `json:"direction"`
	Bytes         uint64  `json:"bytes"`
	Conns         int     `json:"conns"`
	BytesEach     uint64  `json:"bytesEach"`
	Iterations    int     `json:"iterations"`
	Warmup        int     `json:"warmup"`
	Count         int     `json:"count"`
	Concurrency   int     `json:"concurrency"`
	EchoTarget    target  `json:"echoTarget"`
	LoadTarget    target  `json:"loadTarget"`
	Loaders       int     `json:"loaders"`
	WarmupMs      float64 `json:"warmupMs"`
	WindowMs      float64 `json:"windowMs"`
	HealthyTarget target  `json:"healthyTarget"`
	StallTarget   target  `json:"stallTarget"`
	Mode          string  `json:"mode"`
	Healthy       int     `json:"healthy"`
	Stalled       bool    `json:"stalled"`
	DrainMs       float64 `json:"drainMs"`
	Send          bool    `json:"send"`
}

var payload = func() []byte {
	b := make([]byte, chunk)
	for i := range b {
		b[i] = 0x5a
	}
	return b
}()

// open connects to a target: TCP, or a single-use tunnel through the gRPC frontend.
func open(t target) (net.Conn, error) {
	address := fmt.Sprintf("127.0.0.1:%d", t.Port)
	switch t.Via {
	case "direct":
		c, err := net.Dial("tcp", address)
		if err == nil {
			c.(*net.TCPConn).SetNoDelay(true)
		}
		return c, err
	case "grpc":
		path := t.UdsPath
		dialer := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tunnel, err := client.CreateSingleUseGrpcTunnelWithContext(ctx, context.Background(),
			"passthrough:///knp-bench", dialer, grpc.WithBlock(), grpc.WithReturnConnectionError(),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return tunnel.DialContext(ctx, "tcp", address)
	}
	return nil, fmt.Errorf("goclient: unsupported target %q", t.Via)
}

// openMany opens count connections, at most concurrency at a time; stops at the first failure.
func openMany(t target, count, concurrency int) ([]net.Conn, error) {
	var mu sync.Mutex
	var conns []net.Conn
	var first error
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < min(concurrency, count); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if first != nil || next >= count {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				c, err := open(t)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				} else if err == nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, first
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

func header(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

func readCount(c net.Conn, buf []byte, n uint64) error {
	for got := uint64(0); got < n; {
		k, err := c.Read(buf)
		got += uint64(k)
		if err != nil && got < n {
			return fmt.Errorf("connection ended after %d of %d bytes: %w", got, n, err)
		}
	}
	return nil
}

func download(c net.Conn, n uint64) (float64, error) {
	buf := make([]byte, chunk)
	t0 := time.Now()
	if _, err := c.Write(header(n)); err != nil {
		return 0, err
	}
	err := readCount(c, buf, n)
	return time.Since(t0).Seconds(), err
}

func upload(c net.Conn, n uint64) (float64, error) {
	t0 := time.Now()
	if _, err := c.Write(header(n)); err != nil {
		return 0, err
	}
	for left := n; left > 0; {
		k := min(left, chunk)
		if _, err := c.Write(payload[:k]); err != nil {
			return 0, err
		}
		left -= k
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil || one[0] != ack {
		return 0, errors.New("sink did not acknowledge the upload")
	}
	return time.Since(t0).Seconds(), nil
}

func echoOnce(c net.Conn, p, buf []byte) (float64, error) {
	t0 := time.Now()
	if _, err := c.Write(p); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, buf[:len(p)]); err != nil {
		return 0, fmt.Errorf("echo connection ended: %w", err)
	}
	return float64(time.Since(t0).Nanoseconds()) / 1e6, nil
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// summarize turns samples in ms into a summary in µs (nearest-rank percentiles).
func summarize(ms []float64) map[string]any {
	us := make([]float64, len(ms))
	sum := 0.0
	for i, m := range ms {
		us[i] = m * 1000
		sum += us[i]
	}
	sort.Float64s(us)
	pct := func(p float64) float64 {
		if len(us) == 0 {
			return 0
		}
		rank := int(math.Ceil(p / 100 * float64(len(us))))
		return us[max(1, min(len(us), rank))-1]
	}
	mean, top := 0.0, 0.0
	if len(us) > 0 {
		mean, top = sum/float64(len(us)), us[len(us)-1]
	}
	return map[string]any{"samples": len(us), "p50": round1(pct(50)), "p99": round1(pct(99)),
		"mean": round1(mean), "max": round1(top)}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	state := &idleState{}
	for in.Scan() {
		var cmd command
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			out.Encode(map[string]any{"id": 0, "ok": false, "error": err.Error()})
			continue
		}
		result, err := run(&cmd, state)
		if err != nil {
			out.Encode(map[string]any{"id": cmd.ID, "ok": false, "error": err.Error()})
		} else {
			out.Encode(map[string]any{"id": cmd.ID, "ok": true, "result": result})
		}
	}
	closeAll(state.conns)
}
