#!/usr/bin/env python3
"""check_tcp_proxy.py PROXY: examples/tcp_proxy against an upstream server
written here (threads, blocking sockets, stdlib only), on the backend
AMIO_BACKEND names. Four proxies: M (-w 2) and F (-w 1) in front of the
upstream, R in front of a closed port, T in front of a listener whose
backlog is full (its SYNs are dropped: the connect deadline has to end it).

The upstream's first byte from a client picks what it does:
  E  echo until EOF, then send b"BYE <bytes seen>\\n" and close
  R  reset at once (SO_LINGER 0);  r  reset after 256 KiB
  U  read an 8-byte token, send b"early", shut down its write side, read to
     EOF and record what it got under the token
  F  read a token and a length N, send N bytes of a pattern (nothing read
     meanwhile), shut down, read to EOF
  W  read a token, read to EOF or reset, record when it ended

Checks (each prints ok/FAIL; any FAIL exits 1; 77 when io_uring cannot be
set up here and AMIO_REQUIRE_IO_URING is not 1):
  relay: 8 connections echo 4 MiB each both ways at once, sha256 equal
  half-close: client SHUT_WR first, upstream still replies; upstream SHUT_WR
    first, client still sends
  refused upstream: the client's connection is closed within 10 s
  connect timeout: closed after the 5 s deadline (not before 4.5 s)
  resets: upstream reset at once and mid-stream reach the client; a client
    reset reaches upstream; the proxy serves new connections after them
  back-pressure: a client that never reads stalls the pipe (echo and flood),
    the proxy's VmRSS grows < 64 MiB, other connections on the same worker
    still relay, and once the client reads every byte arrives
  fds: 300 connections ended in 4 ways (the whole echoes among them all
    succeed); then /proc/PID/fd is back to its count, upstream holds none
  signals: SIGTERM with connections open (one stalled), SIGINT: exit 0
  errors: the proxies in front of the live upstream log nothing
Liveness bounds (10 s, 20 s) only catch hangs; nothing asserts a speed.
"""
import hashlib, os, random, re, signal, socket, struct, subprocess, sys, tempfile, threading, time

MiB = 1 << 20
PROXY = sys.argv[1]
BACKEND = os.environ.get("AMIO_BACKEND", "")
failures = []


def check(cond, what):
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


# ---- Data: chunks that carry their number, so a lost, doubled or swapped
# chunk changes the hash.
BASE = random.Random(7).randbytes(2 * MiB)


def pattern(seed, n, size=65536):
    k = 0
    while n > 0:
        off = (k * 40503 + seed * 7919) % MiB
        c = (struct.pack(">QQ", seed, k) + BASE[off:off + size - 16])[:n]
        yield c
        n -= len(c)
        k += 1


def digest(seed, n, tail=b""):
    h = hashlib.sha256()
    for c in pattern(seed, n):
        h.update(c)
    h.update(tail)
    return h.hexdigest()


# ---- The upstream server ----------------------------------------------------
class Upstream:
    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1024)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.active = 0
        self.results, self.flood_sent, self.started, self.ended = {}, {}, {}, {}
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            c, _ = self.ls.accept()
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        with self.lock:
            self.active += 1
        try:
            c.settimeout(60)
            mode = recv_exact(c, 1)
            getattr(self, "mode_" + mode.decode())(c)
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            pass
        finally:
            c.close()
            with self.lock:
                self.active -= 1

    def mode_E(self, c):
        seen = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            seen += len(d)
            c.sendall(d)
        c.sendall(b"BYE %d\n" % seen)

    def mode_R(self, c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def mode_r(self, c):
        recv_exact(c, 256 * 1024)
        self.mode_R(c)

    def mode_U(self, c):
        token = recv_exact(c, 8)
        c.sendall(b"early")
        c.shutdown(socket.SHUT_WR)
        h, n = read_to_eof(c)
        self.results[token] = (h.hexdigest(), n)

    def mode_F(self, c):
        token, n = struct.unpack(">QQ", recv_exact(c, 16))
        self.flood_sent[token] = 0
        for chunk in pattern(token, n):
            c.sendall(chunk)
            self.flood_sent[token] += len(chunk)
        c.shutdown(socket.SHUT_WR)
        read_to_eof(c)

    def mode_W(self, c):
        token = recv_exact(c, 8)
        self.started[token] = True
        try:
            read_to_eof(c)
        finally:
            self.ended[token] = time.monotonic()


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise ValueError("EOF")
        b += d
    return bytes(b)


def read_to_eof(s, h=None):
    h, n = h or hashlib.sha256(), 0
    while True:
        d = s.recv(1 << 18)
        if not d:
            return h, n
        h.update(d)
        n += len(d)


def closed_within(s, seconds):
    """True if s reads EOF or a reset within seconds (bytes before it are skipped)."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except OSError:
        return False


def connect(port, timeout=20, rcvbuf=0):
    s = socket.socket()
    if rcvbuf:  # a client that does not read: keep its window small and fixed
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def echo(port, seed, n, out=None, key=None, timeout=20):
    """Send n pattern bytes through the proxy to the echo mode while reading."""
    ok, err = False, None
    try:
        s = connect(port, timeout)
        s.sendall(b"E")

        def send():
            try:
                for c in pattern(seed, n):
                    s.sendall(c)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                nonlocal err
                err = e

        t = threading.Thread(target=send)
        t.start()
        h, got = read_to_eof(s)
        t.join()
        s.close()
        ok = err is None and h.hexdigest() == digest(seed, n, b"BYE %d\n" % n)
    except OSError as e:
        err = e
    if out is not None:
        out[key] = (ok, err)
    return ok


# ---- The proxy process --------------------------------------------------------
def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Proxy:
    def __init__(self, upstream, workers):
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen([PROXY, "-p", "0", "-u", upstream, "-w", str(workers)],
                                  stdout=subprocess.PIPE, stderr=self.err, text=True)
        timer = threading.Timer(10, self.p.kill)
        timer.start()
        line = self.p.stdout.readline()
        timer.cancel()
        m = re.search(r"127\.0\.0\.1:(\d+).*backend (\S+)", line)
        if not m:
            self.p.wait()
            err = self.stderr()
            print(line + err, flush=True)
            if (BACKEND == "io_uring" and os.environ.get("AMIO_REQUIRE_IO_URING") != "1" and
                    re.search(r"amio_poller_new: -(ENOSYS|EPERM|EACCES)", err)):
                sys.exit(77)
            sys.exit("check_tcp_proxy: the proxy did not start")
        self.port, self.backend, self.pid = int(m.group(1)), m.group(2), self.p.pid

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self, sig):
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        out = self.p.stdout.read()
        name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        check(rc == 0 and (name + ", stopped") in out,
              "%s: exits 0 within 10 s (rc %s, %r)" % (name, rc, out.strip()))
        if rc != 0:
            print(self.stderr(), flush=True)


def wait_for(cond, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def wait_stall(progress, quiet=1.5, limit=30):
    """Wait until progress() stops moving for quiet seconds; its value, or None."""
    last, since, end = progress(), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.1)
        v = progress()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return v
    return None


# ---- The checks -----------------------------------------------------------------
def test_relay(m):
    out, ts = {}, []
    for k in range(8):
        ts.append(threading.Thread(target=echo, args=(m.port, 100 + k, 4 * MiB + k * 4099, out, k)))
        ts[-1].start()
    for t in ts:
        t.join()
    bad = {k: v for k, v in out.items() if not v[0]}
    check(len(out) == 8 and not bad,
          "relay: 8 x 4 MiB echoed byte-exact both ways at once %s" % (bad or ""))


def test_half_close(m):
    s = connect(m.port)
    s.sendall(b"E" + b"ping" * 1000)
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.2)
    h, n = read_to_eof(s)
    want = hashlib.sha256(b"ping" * 1000 + b"BYE 4000\n").hexdigest()
    check(h.hexdigest() == want, "half-close: client SHUT_WR, upstream saw EOF and its reply came")
    s.close()

    token = os.urandom(8)
    s = connect(m.port)
    s.sendall(b"U" + token)
    early = recv_exact(s, 5)
    check(early == b"early" and s.recv(10) == b"",
          "half-close: upstream SHUT_WR reaches the client as EOF")
    for c in pattern(5, MiB):
        s.sendall(c)  # the client's direction still works
    s.shutdown(socket.SHUT_WR)
    check(closed_within(s, 10), "half-close: both EOFs passed on, the proxy closed")
    s.close()
    ok = wait_for(lambda: token in m.upstream.results, 10)
    check(ok and m.upstream.results[token] == (digest(5, MiB), MiB),
          "half-close: every byte sent after upstream's SHUT_WR arrived")


def test_resets(m):
    s = connect(m.port)
    s.sendall(b"R")
    check(closed_within(s, 10), "reset: upstream reset at once, the client sees EOF/reset")
    s.close()

    s = connect(m.port)
    s.sendall(b"r")
    def send():
        try:
            for c in pattern(9, 8 * MiB):
                s.sendall(c)
        except OSError:
            pass  # the reset, as meant

    threading.Thread(target=send, daemon=True).start()
    check(closed_within(s, 10), "reset: upstream reset mid-stream, the client sees EOF/reset")
    s.close()

    token = os.urandom(8)
    s = connect(m.port)
    s.sendall(b"W" + token + b"x" * 100000)
    wait_for(lambda: token in m.upstream.started, 10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    check(wait_for(lambda: token in m.upstream.ended, 10),
          "reset: a client reset closes the upstream connection")
    check(echo(m.port, 11, 100000), "reset: the proxy serves new connections afterwards")


def probes(port, what):
    ok = all(echo(port, 200 + k, MiB, timeout=10) for k in range(3))
    check(ok, what + ": 3 other connections relay 1 MiB meanwhile")


def test_backpressure(f):
    base = rss_kib(f.pid)
    # Echo: the client sends and does not read until the pipe stalls.
    n = 200 * MiB
    s = connect(f.port, timeout=60, rcvbuf=65536)
    s.sendall(b"E")
    sent = [0]

    def send():
        try:
            for c in pattern(21, n):
                s.sendall(c)
                sent[0] += len(c)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            sent[0] = -1

    t = threading.Thread(target=send, daemon=True)
    t.start()
    v = wait_stall(lambda: sent[0])
    check(v is not None and 0 < v < n,
          "back-pressure (echo): a client that does not read stalls (%s of %d B sent)" % (v, n))
    probes(f.port, "back-pressure (echo)")
    grow = rss_kib(f.pid) - base
    check(grow < 64 * 1024, "back-pressure (echo): proxy VmRSS grew %d KiB (< 64 MiB)" % grow)
    h, got = read_to_eof(s)
    t.join(30)
    check(h.hexdigest() == digest(21, n, b"BYE %d\n" % n),
          "back-pressure (echo): once the client reads, all %d B arrive in order" % n)
    s.close()

    # Flood: upstream sends without reading; the client does not read.
    token = 77
    s = connect(f.port, timeout=60, rcvbuf=65536)
    s.sendall(b"F" + struct.pack(">QQ", token, n))
    v = wait_stall(lambda: f.upstream.flood_sent.get(token, 0))
    check(v is not None and 0 < v < n,
          "back-pressure (flood): upstream stalls behind a client that does not read "
          "(%s of %d B sent)" % (v, n))
    probes(f.port, "back-pressure (flood)")
    grow = rss_kib(f.pid) - base
    check(grow < 64 * 1024, "back-pressure (flood): proxy VmRSS grew %d KiB (< 64 MiB)" % grow)
    h, got = read_to_eof(s)
    check(h.hexdigest() == digest(token, n),
          "back-pressure (flood): once the client reads, all %d B arrive in order" % n)
    s.close()


def test_fds(m):
    settled = lambda: m.upstream.active == 0
    wait_for(settled, 10)
    time.sleep(0.3)
    base = nfds(m.pid)
    lost = []

    def client(k):
        for i in range(15):
            kind = (k + i) % 4
            try:
                s = connect(m.port)
                if kind == 0:  # a whole echo: must succeed
                    s.sendall(b"Ehello")
                    s.shutdown(socket.SHUT_WR)
                    h, n = read_to_eof(s)
                    if h.hexdigest() != hashlib.sha256(b"helloBYE 5\n").hexdigest():
                        lost.append((k, i, n))
                elif kind == 1:  # reset after sending
                    s.sendall(b"E" + b"y" * 5000)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif kind == 2:  # gone before the upstream connect is done
                    pass
                else:  # closes with the echo unread
                    s.sendall(b"E" + b"z" * 200000)
                    time.sleep(0.01)
                s.close()
            except OSError as e:
                if kind == 0:
                    lost.append((k, i, e))

    ts = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    check(not lost, "fds: every whole echo among them succeeded %s" % (lost[:5] or ""))
    ok = wait_for(lambda: settled() and nfds(m.pid) == base, 15)
    check(ok, "fds: after 300 connections the proxy holds %d fds (%d before), upstream %d "
          "connections" % (nfds(m.pid), base, m.upstream.active))


def main():
    up = Upstream()
    m = Proxy("127.0.0.1:%d" % up.port, 2)
    m.upstream = up
    if BACKEND:
        check(m.backend == BACKEND, "the proxy runs on %s (it says %s)" % (BACKEND, m.backend))

    # T: a listener whose accept queue is full drops SYNs; only the deadline ends the connect.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):
        x = socket.socket()
        x.setblocking(False)
        x.connect_ex(full.getsockname())
        fillers.append(x)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    hangs = probe.connect_ex(full.getsockname()) != 0
    probe.close()
    t_res = {}
    if hangs:
        tp = Proxy("127.0.0.1:%d" % full.getsockname()[1], 1)

        def timed():
            s = connect(tp.port)
            t0 = time.monotonic()
            t_res["closed"] = closed_within(s, 20)
            t_res["after"] = time.monotonic() - t0
            s.close()

        tt = threading.Thread(target=timed)
        tt.start()
    else:
        print("skip: connect timeout (a full backlog does not drop SYNs here)", flush=True)

    # R: nothing listens on its upstream port.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    r = Proxy("127.0.0.1:%d" % dead.getsockname()[1], 1)
    dead.close()
    for k in range(3):
        s = connect(r.port)
        if k == 1:
            s.sendall(b"E" + b"q" * 1000)
        check(closed_within(s, 10), "refused upstream: client %d closed within 10 s" % k)
        s.close()
    check(re.search("refused", r.stderr(), re.I), "refused upstream: the proxy logs the refusal")

    f = Proxy("127.0.0.1:%d" % up.port, 1)
    f.upstream = up
    # 32 MiB cycle the pool's buffer ring (16 MiB) once: the baseline of the
    # RSS checks then holds the whole pool (and a sanitizer's shadow of it).
    check(echo(f.port, 1, 32 * MiB), "warm-up: 32 MiB echoed through F")
    for test in (lambda: test_relay(m), lambda: test_half_close(m), lambda: test_resets(m),
                 lambda: test_backpressure(f), lambda: test_fds(m)):
        try:
            test()
        except Exception as e:  # a hang caught by a socket timeout, a reset...
            check(False, "%s raised %r" % (test.__code__.co_names, e))

    # SIGTERM with connections open: idle ones, and one stalled behind a client that does not read.
    idle = [connect(m.port) for _ in range(3)]
    for s in idle:
        s.sendall(b"E")
    stalled = connect(m.port, rcvbuf=65536)
    stalled.sendall(b"F" + struct.pack(">QQ", 78, 200 * MiB))
    wait_stall(lambda: up.flood_sent.get(78, 0), quiet=0.5, limit=10)
    m.stop(signal.SIGTERM)
    check(all(closed_within(s, 5) for s in idle), "SIGTERM: open connections were closed")
    f.stop(signal.SIGINT)
    r.stop(signal.SIGINT)
    if hangs:
        tt.join()
        tp.stop(signal.SIGTERM)
        check(t_res.get("closed") and t_res["after"] >= 4.5 and "-ETIME" in tp.stderr(),
              "connect timeout: closed %.1f s after connecting (deadline 5 s), the proxy says "
              "-ETIME" % t_res.get("after", -1))
    # M and F have a live upstream: nothing to say (an amio error, a connect refused...).
    for name, proxy in (("M", m), ("F", f)):
        err = proxy.stderr().splitlines()
        check(not err, "proxy %s logged no error %s" % (name, err[:5] or ""))
    print("check_tcp_proxy: %d failures" % len(failures), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
