package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

type idleState struct{ conns []net.Conn }

func run(cmd *command, state *idleState) (any, error) {
	switch cmd.Op {
	case "transfer":
		c, err := open(cmd.Target)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		var s float64
		if cmd.Direction == "download" {
			s, err = download(c, cmd.Bytes)
		} else {
			s, err = upload(c, cmd.Bytes)
		}
		return map[string]any{"bytes": cmd.Bytes, "seconds": s}, err
	case "aggregate":
		return aggregate(cmd)
	case "echo":
		return echo(cmd)
	case "loadedEcho":
		return loadedEcho(cmd)
	case "dial":
		return dial(cmd)
	case "isolation":
		return isolation(cmd)
	case "idleOpen":
		t0 := time.Now()
		conns, err := openMany(cmd.Target, cmd.Count, cmd.Concurrency)
		state.conns = append(state.conns, conns...)
		r := map[string]any{"opened": len(conns), "seconds": time.Since(t0).Seconds()}
		if err != nil {
			r["error"] = err.Error()
		}
		return r, nil
	case "idleClose":
		n := len(state.conns)
		closeAll(state.conns)
		state.conns = nil
		return map[string]any{"closed": n}, nil
	}
	return nil, fmt.Errorf("goclient: unknown op %q", cmd.Op)
}

func aggregate(cmd *command) (any, error) {
	conns, err := openMany(cmd.Target, cmd.Conns, 10)
	defer closeAll(conns)
	if err != nil {
		return nil, fmt.Errorf("opened %d of %d: %w", len(conns), cmd.Conns, err)
	}
	t0 := time.Now()
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func(c net.Conn) {
			var err error
			if cmd.Direction == "download" {
				_, err = download(c, cmd.BytesEach)
			} else {
				_, err = upload(c, cmd.BytesEach)
			}
			errs <- err
		}(c)
	}
	for range conns {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	return map[string]any{
		"bytes": cmd.BytesEach * uint64(len(conns)), "seconds": time.Since(t0).Seconds(),
	}, nil
}

func echoPayload() []byte {
	p := make([]byte, echoSize)
	for i := range p {
		p[i] = 0x65
	}
	return p
}

func echo(cmd *command) (any, error) {
	c, err := open(cmd.Target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	p, buf := echoPayload(), make([]byte, echoSize)
	samples := make([]float64, 0, cmd.Iterations)
	for i := 0; i < cmd.Warmup+cmd.Iterations; i++ {
		ms, err := echoOnce(c, p, buf)
		if err != nil {
			return nil, err
		}
		if i >= cmd.Warmup {
			samples = append(samples, ms)
		}
	}
	return summarize(samples), nil
}

// drainEndless asks each connection for an endless download and reads it until it is closed.
func drainEndless(conns []net.Conn, count func(int)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			if _, err := c.Write(header(endless)); err != nil {
				return
			}
			buf := make([]byte, chunk)
			for {
				n, err := c.Read(buf)
				count(n)
				if err != nil {
					return
				}
			}
		}(c)
	}
	return &wg
}

func waitAtMost(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

func ms(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }

func loadedEcho(cmd *command) (any, error) {
	e, err := open(cmd.EchoTarget)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	conns, err := openMany(cmd.LoadTarget, cmd.Loaders, 10)
	defer closeAll(conns)
	if err != nil {
		return nil, fmt.Errorf("opened %d of %d: %w", len(conns), cmd.Loaders, err)
	}
	var loaded atomic.Int64
	wg := drainEndless(conns, func(n int) { loaded.Add(int64(n)) })
	time.Sleep(ms(cmd.WarmupMs))
	p, buf := echoPayload(), make([]byte, echoSize)
	var samples []float64
	from, t0 := loaded.Load(), time.Now()
	for end := t0.Add(ms(cmd.WindowMs)); time.Now().Before(end); {
		m, err := echoOnce(e, p, buf)
		if err != nil {
			return nil, err
		}
		samples = append(samples, m)
	}
	moved, secs := loaded.Load()-from, time.Since(t0).Seconds()
	closeAll(conns)
	waitAtMost(wg, 2*time.Second)
	r := summarize(samples)
	r["loadMBps"] = float64(moved) / secs / 1e6
	return r, nil
}

func dial(cmd *command) (any, error) {
	var mu sync.Mutex
	var samples []float64
	var first error
	next := 0
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < cmd.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := make([]byte, 1)
			for {
				mu.Lock()
				if first != nil || next >= cmd.Count {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				s := time.Now()
				c, err := open(cmd.Target)
				if err != nil {
					err = fmt.Errorf("dial: %w", err)
				} else {
					if cmd.Send {
						_, err = c.Write([]byte{0x31})
					}
					if err == nil {
						_, err = c.Read(one)
					}
					c.Close()
					if err != nil {
						err = fmt.Errorf("first byte: %w", err)
					}
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				samples = append(samples, float64(time.Since(s).Nanoseconds())/1e6)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	seconds := time.Since(t0).Seconds()
	r := summarize(samples)
	r["perSecond"] = float64(cmd.Count) / seconds
	r["seconds"] = seconds
	return r, nil
}

// isolation: healthy connections run for a warm-up, then for a window that starts when one more
// connection (the stalled one) asks for an endless download and never reads it.
func isolation(cmd *command) (any, error) {
	healthy, err := openMany(cmd.HealthyTarget, cmd.Healthy, 10)
	defer closeAll(healthy)
	if err != nil {
		return nil, fmt.Errorf("opened %d of %d: %w", len(healthy), cmd.Healthy, err)
	}
	var stalled net.Conn
	if cmd.Stalled {
		if stalled, err = open(cmd.StallTarget); err != nil {
			return nil, errors.New("could not open the stalled connection")
		}
		defer stalled.Close()
	}
	var start, end atomic.Int64
	start.Store(1 << 62)
	end.Store(1 << 62)
	in := func() bool { t := time.Now().UnixNano(); return t >= start.Load() && t < end.Load() }
	var bytes atomic.Int64
	var mu sync.Mutex
	var samples []float64
	var stop atomic.Bool
	var wg *sync.WaitGroup
	if cmd.Mode == "throughput" {
		wg = drainEndless(healthy, func(n int) {
			if in() {
				bytes.Add(int64(n))
			}
		})
	} else {
		wg = &sync.WaitGroup{}
		for _, c := range healthy {
			wg.Add(1)
			go func(c net.Conn) {
				defer wg.Done()
				p, buf := echoPayload(), make([]byte, echoSize)
				for !stop.Load() {
					counted := in()
					m, err := echoOnce(c, p, buf)
					if err != nil {
						return
					}
					if counted {
						mu.Lock()
						samples = append(samples, m)
						mu.Unlock()
					}
				}
			}(c)
		}
	}
	time.Sleep(ms(cmd.WarmupMs))
	s := time.Now()
	start.Store(s.UnixNano())
	end.Store(s.Add(ms(cmd.WindowMs)).UnixNano())
	if stalled != nil {
		stalled.Write(header(endless)) // and never read it
	}
	time.Sleep(ms(cmd.WindowMs))
	stop.Store(true)
	closeAll(healthy)
	waitAtMost(wg, 2*time.Second)
	r := map[string]any{"healthy": len(healthy), "windowSeconds": cmd.WindowMs / 1000}
	if cmd.Mode == "throughput" {
		r["mbPerSecond"] = float64(bytes.Load()) / 1e6 / (cmd.WindowMs / 1000)
	} else {
		mu.Lock()
		r["latency"] = summarize(samples)
		mu.Unlock()
	}
	if stalled != nil {
		ended, got := drainStalled(stalled, ms(cmd.DrainMs))
		r["stalledEnded"], r["stalledBytes"] = ended, got
	}
	return r, nil
}

// drainStalled reads the stalled connection for up to d: did the proxy end it?
func drainStalled(c net.Conn, d time.Duration) (bool, int) {
	var got atomic.Int64
	ended := make(chan struct{})
	go func() {
		buf := make([]byte, chunk)
		for {
			n, err := c.Read(buf)
			got.Add(int64(n))
			if err != nil {
				close(ended)
				return
			}
		}
	}()
	select {
	case <-ended:
		return true, int(got.Load())
	case <-time.After(d):
		c.Close()
		return false, int(got.Load())
	}
}
