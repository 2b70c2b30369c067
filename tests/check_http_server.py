#!/usr/bin/env python3
"""examples/http_server against real clients on 127.0.0.1 (stdlib only; curl
too if installed): keep-alive, pipelining, requests split byte by byte,
Connection: close, HTTP/1.0, 400/404/431/501, files served byte-exact (to a
slow reader too), idle and request-head timeouts (never early), a client
reset mid-response, 500 connections dropped without an fd leak, and SIGTERM.
The backend is the one AMIO_BACKEND names (checked against what the server
logs). usage: check_http_server.py SERVER_BINARY
Asserts contents, statuses and orders, never a speed: the upper bounds on
the timeouts are generous (a loaded machine is slow, not wrong)."""
import hashlib
import http.client
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

IDLE_MS, HEAD_MS = 1500, 1000  # -k and -t
SLACK = 10.0                   # seconds a timeout may be late on a busy machine


def fail(msg):
    raise AssertionError(msg)


def connect(port, nodelay=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """HTTP/1.1 responses off a raw socket: status, headers, body by Content-Length."""

    def __init__(self, sock, chunk=65536, delay=0.0):
        self.s, self.buf, self.chunk, self.delay = sock, b"", chunk, delay

    def _more(self):
        if self.delay:
            time.sleep(self.delay)
        d = self.s.recv(self.chunk)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[0] != "HTTP/1.1":
            fail("bad status line %r" % lines[0])
        hdrs = {}
        for h in lines[1:]:
            k, v = h.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs["content-length"])
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(parts[1]), hdrs, body

    def eof(self):
        """True once the server closed: EOF, or a reset after it closed."""
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except ConnectionResetError:
            return True


def req(path="/", extra="", version="HTTP/1.1"):
    return ("GET %s %s\r\nHost: t\r\n%s\r\n" % (path, version, extra)).encode()


def closes_now(r, t0, what):
    """The server closes right after its answer: EOF before the idle timeout
    could have done it (a close stranded until then is a bug)."""
    if not r.eof():
        fail("%s: the connection stays open" % what)
    if time.monotonic() - t0 >= IDLE_MS / 1000:
        fail("%s: closed after %.2f s, by the idle timeout, not by the server's answer" %
             (what, time.monotonic() - t0))


def closed_after(sock, t0):
    """Seconds from t0 until the server closes sock."""
    sock.settimeout(IDLE_MS / 1000 + HEAD_MS / 1000 + SLACK)
    try:
        if Reader(sock).eof():
            return time.monotonic() - t0
    except socket.timeout:
        fail("the server never closed the connection")


class Skip(Exception):
    pass


class Server:
    def __init__(self, binary, root):
        self.p = subprocess.Popen([binary, "-p", "0", "-w", "2", "-d", root, "-k", str(IDLE_MS),
                                   "-t", str(HEAD_MS)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if "listening on 127.0.0.1:" not in line:
            err = self.p.stderr.read()
            self.p.wait()
            # No io_uring here (seccomp, sysctl): skipped, as the Check suites do.
            if ("amio_poller_new" in err and os.environ.get("AMIO_BACKEND") == "io_uring" and
                    os.environ.get("AMIO_REQUIRE_IO_URING") != "1"):
                raise Skip(err.strip())
            fail("no listening line: %r %s" % (line, err))
        self.port = int(line.split("127.0.0.1:")[1].split(",")[0])
        self.root = root
        self.backend = line.rsplit("backend ", 1)[1].strip()
        want = os.environ.get("AMIO_BACKEND")
        if want and want != self.backend:
            fail("AMIO_BACKEND=%s but the server runs on %s" % (want, self.backend))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.p.pid))

    def fd_names(self):
        d = "/proc/%d/fd" % self.p.pid
        names = []
        for f in os.listdir(d):
            try:
                names.append(os.readlink(os.path.join(d, f)))
            except OSError:
                pass
        return sorted(names)


def test_keep_alive(srv, files):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    sock = None
    for i in range(5):
        c.request("GET", "/")
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or body != b"Hello, World!":
            fail("GET / #%d: %d %r" % (i, r.status, body))
        if sock is not None and c.sock is not sock:
            fail("GET / #%d came on a new connection: keep-alive broken" % i)
        sock = c.sock
    c.request("GET", "/small.txt")
    r = c.getresponse()
    if r.status != 200 or r.read() != files["small.txt"] or c.sock is not sock:
        fail("GET /small.txt on the kept connection")
    c.close()


def test_pipelined(srv, files):
    s = connect(srv.port)
    paths = ["/", "/small.txt", "/nope", "/", "/mid.bin", "/small.txt", "/"]
    s.sendall(b"".join(req(p) for p in paths))
    r = Reader(s)
    for p in paths:
        st, h, body = r.response()
        want = (404, b"") if p == "/nope" else (200, b"Hello, World!" if p == "/" else files[p[1:]])
        if (st, body) != want:
            fail("pipelined %s: got %d, %d bytes" % (p, st, len(body)))
        if h.get("connection") != "keep-alive":
            fail("pipelined %s: Connection %r" % (p, h.get("connection")))
    s.close()


def test_deep_pipelining(srv, files):
    """150,000 requests sent at once to a small receive buffer, read only
    after a while: more answers than the kernel's buffers hold (tcp_wmem
    4 MiB) pile up past amio's high-water mark (1 MiB: the recv pauses, then
    goes on), and every one comes back, in order."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(60)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(req("/"))
    one = b""
    while not one.endswith(b"Hello, World!"):
        one += s.recv(4096)
    n = 150000
    t = threading.Thread(target=s.sendall, args=(req("/") * n,))
    t.start()
    time.sleep(0.5)
    want, got = one * n, bytearray()
    while len(got) < len(want):
        d = s.recv(1 << 20)
        if not d:
            fail("deep pipelining: closed after %d of %d bytes" % (len(got), len(want)))
        got += d
    t.join()
    if bytes(got) != want:
        fail("deep pipelining: the %d answers differ from %d x %r" % (n, n, one))
    s.close()


def test_split(srv, files):
    s = connect(srv.port)
    for b in req("/small.txt") + req("/"):
        s.send(bytes([b]))
        time.sleep(0.001)
    r = Reader(s)
    if r.response()[2] != files["small.txt"] or r.response()[2] != b"Hello, World!":
        fail("requests sent byte by byte")
    s.close()


def test_close_and_http10(srv, files):
    for data, what in [(req("/", "Connection: close\r\n"), "Connection: close"),
                       (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0"),
                       (req("/small.txt", "Connection: close\r\n"), "a file, Connection: close")]:
        s = connect(srv.port)
        t0 = time.monotonic()
        s.sendall(data + req("/"))  # the second request must not be answered
        r = Reader(s)
        st, h, body = r.response()
        if st != 200 or h.get("connection") != "close":
            fail("%s: %d %r" % (what, st, h))
        closes_now(r, t0, what)
        if r.buf:
            fail("%s: more after the response: %r" % (what, r.buf[:80]))
        s.close()
    s = connect(srv.port)  # HTTP/1.0 asking for keep-alive keeps it
    s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
    r = Reader(s)
    for _ in range(2):
        st, h, body = r.response()
        if st != 200 or h.get("connection") != "keep-alive":
            fail("HTTP/1.0 keep-alive: %d %r" % (st, h))
    s.close()


def test_errors(srv, files):
    outside = os.path.join(os.path.dirname(srv.root), "secret")  # exists, outside -d
    cases = [(req("/nope"), 404, False), (req("/../etc/passwd"), 400, True),
             (req("/" + outside), 404, False), (req("/%2e%2e/secret"), 404, False),
             (req("/a/../../x"), 400, True), (b"garbage\r\n\r\n", 400, True),
             (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400, True),
             (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 400, True),
             (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 501, True),
             (req("/", "Content-Length: 5\r\n") + b"hello", 413, True),
             (req("/", "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n", 413, True),
             (req("/", "X-Big: " + "a" * 9000 + "\r\n"), 431, True),
             (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000, 431, True)]  # no end at all
    for data, want, closes in cases:
        s = connect(srv.port)
        t0 = time.monotonic()
        s.sendall(data)
        r = Reader(s)
        st, h, _ = r.response()
        if st != want:
            fail("%r...: status %d, want %d" % (data[:40], st, want))
        if closes and h.get("connection") != "close":
            fail("%r...: %d without Connection: close" % (data[:40], st))
        if closes:
            closes_now(r, t0, "%r... (%d)" % (data[:24], st))
        if not closes:
            s.sendall(req("/"))
            if r.response()[2] != b"Hello, World!":
                fail("a 404 broke the connection")
        s.close()


def test_files(srv, files):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    for name in ["big.bin", "empty.txt", "mid.bin", "sub/inner.txt", "big.bin"]:
        c.request("GET", "/" + name)
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or hashlib.sha256(body).digest() != hashlib.sha256(files[name]).digest():
            fail("GET /%s: %d, %d bytes of %d" % (name, r.status, len(body), len(files[name])))
    for name in ["sub", "sub/"]:  # a directory is no file
        c.request("GET", "/" + name)
        r = c.getresponse()
        r.read()
        if r.status != 404:
            fail("GET /%s: %d" % (name, r.status))
    c.close()
    # A slow reader: a small receive buffer and pauses, so the server's sends
    # wait on a full socket; the pipelined GET / must come after the file.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(req("/big.bin") + req("/"))
    r = Reader(s, chunk=16384, delay=0.002)
    st, _, body = r.response()
    if st != 200 or hashlib.sha256(body).digest() != hashlib.sha256(files["big.bin"]).digest():
        fail("slow reader: %d, %d bytes" % (st, len(body)))
    if r.response()[2] != b"Hello, World!":
        fail("slow reader: the pipelined GET / after the file")
    s.close()


def test_idle(srv, files):
    s = connect(srv.port)
    t0 = time.monotonic()
    el = closed_after(s, t0)
    if el < IDLE_MS / 1000:
        fail("idle connection closed after %.3f s, before -k %d ms" % (el, IDLE_MS))
    s.close()
    s = connect(srv.port)  # idle after a response: counted from the last bytes received
    t0 = time.monotonic()
    s.sendall(req("/"))
    Reader(s).response()
    el = closed_after(s, t0)
    if el < IDLE_MS / 1000:
        fail("kept connection closed after %.3f s, before -k %d ms" % (el, IDLE_MS))
    s.close()


def test_slowloris(srv, files):
    s = connect(srv.port)
    t0 = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\n")
    s.settimeout(0.25)
    closed = None
    while time.monotonic() - t0 < HEAD_MS / 1000 + IDLE_MS / 1000 + SLACK:
        try:
            s.send(b"X")  # a byte every 0.25 s: the idle timeout never fires
            d = s.recv(4096)
            if not d:
                closed = time.monotonic() - t0
                break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = time.monotonic() - t0
            break
    if closed is None:
        fail("a head trickling in was never cut off")
    if closed < HEAD_MS / 1000:
        fail("head timeout after %.3f s, before -t %d ms" % (closed, HEAD_MS))
    s.close()
    s = connect(srv.port)  # heads split in pieces, each in time: no timeout
    for _ in range(4):
        for part in [b"GET / HT", b"TP/1.1\r\nHo", b"st: t\r\n", b"\r\n"]:
            s.sendall(part)
            time.sleep(HEAD_MS / 1000 / 8)
        if Reader(s).response()[2] != b"Hello, World!":
            fail("split heads, each within -t")
    s.close()


def test_reset_mid_response(srv, files):
    for _ in range(5):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(req("/big.bin") + req("/"))
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST, with the server in the middle of the file
    test_keep_alive(srv, files)


def settle(srv, want, secs=10):
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        n = srv.fds()
        if n <= want:
            return n
        time.sleep(0.05)
    return srv.fds()


def test_many_connections(srv, files):
    # Every worker's file pool up (epoll: a thread pool and an eventfd per
    # poller, made at its first amio_pread): 32 connections reach both.
    for _ in range(32):
        s = connect(srv.port)
        s.sendall(req("/small.txt", "Connection: close\r\n"))
        Reader(s).eof()
        s.close()
    time.sleep(0.5)  # the earlier tests' connections are closed by now
    base, names = srv.fds(), srv.fd_names()
    socks = []
    for i in range(500):
        s = socket.socket()
        s.settimeout(30)
        s.connect(("127.0.0.1", srv.port))
        if i % 4 == 1:
            s.sendall(b"GET / HTTP/1.1\r\nHo")  # a partial head
        elif i % 4 == 2:
            s.sendall(req("/big.bin"))  # a file nobody reads
        elif i % 4 == 3:
            s.sendall(req("/") * 3)
        socks.append(s)
    time.sleep(0.3)
    for i, s in enumerate(socks):
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    n = settle(srv, base)
    if n > base:
        extra = list(srv.fd_names())
        for x in names:
            if x in extra:
                extra.remove(x)
        fail("fds: %d before 500 connections, %d after they were dropped: %s" % (base, n, extra))
    test_keep_alive(srv, files)


def test_curl(srv, files):
    curl = shutil.which("curl")
    if not curl:
        print("     (curl not installed: skipped)")
        return
    url = "http://127.0.0.1:%d" % srv.port
    for args, want in [([url + "/"], b"Hello, World!"),  # two URLs: one kept connection
                       ([url + "/mid.bin", url + "/small.txt"], files["mid.bin"] + files["small.txt"]),
                       (["--http1.0", url + "/big.bin"], files["big.bin"])]:
        p = subprocess.run([curl, "-sf"] + args, capture_output=True, timeout=60)
        if p.returncode != 0 or p.stdout != want:
            fail("curl %s: rc %d, %d bytes" % (args, p.returncode, len(p.stdout)))


def test_sigterm(srv, files):
    idle = connect(srv.port)
    idle.sendall(req("/"))
    r_idle = Reader(idle)
    r_idle.response()
    stalled = socket.socket()  # asks for a file and never reads it
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", srv.port))
    stalled.sendall(req("/big.bin"))
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.p.send_signal(signal.SIGTERM)
    idle.settimeout(SLACK)
    if not r_idle.eof():
        fail("SIGTERM: the idle connection was not closed")
    try:
        rc = srv.p.wait(timeout=5 + SLACK)  # 5 s: the grace period of the stalled one
    except subprocess.TimeoutExpired:
        fail("SIGTERM: still running after %.0f s" % (time.monotonic() - t0))
    if rc != 0:
        fail("SIGTERM: exit status %d: %s" % (rc, srv.p.stderr.read()))
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        fail("SIGTERM: still listening")
    except OSError:
        pass
    idle.close()
    stalled.close()


def main():
    binary = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # the server inherits it
    tmp = tempfile.mkdtemp(prefix="check_http_")
    root = os.path.join(tmp, "www")
    os.makedirs(os.path.join(root, "sub"))
    rnd = open("/dev/urandom", "rb")
    files = {"big.bin": rnd.read(3 * 1024 * 1024 + 12345), "mid.bin": rnd.read(65536 * 2 + 1),
             "small.txt": b"small file\n", "empty.txt": b"", "sub/inner.txt": b"inner\n"}
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    with open(os.path.join(tmp, "secret"), "wb") as f:  # outside -d: never served
        f.write(b"secret")
    try:
        srv = Server(binary, root)
    except Skip as e:
        print("check_http_server: skipped, no io_uring here: %s" % e)
        shutil.rmtree(tmp, ignore_errors=True)
        return 77
    print("http_server on port %d, backend %s" % (srv.port, srv.backend))
    tests = [test_keep_alive, test_pipelined, test_deep_pipelining, test_split, test_close_and_http10, test_errors,
             test_files, test_idle, test_slowloris, test_reset_mid_response,
             test_many_connections, test_curl, test_sigterm]
    failed = 0
    try:
        for t in tests:
            name = t.__name__
            t0 = time.monotonic()
            try:
                t(srv, files)
                print("ok   %-26s %.2f s" % (name, time.monotonic() - t0))
            except (AssertionError, OSError, EOFError, ValueError, KeyError) as e:
                failed += 1
                print("FAIL %-26s %s: %s" % (name, type(e).__name__, e))
            if srv.p.poll() is not None and t is not test_sigterm:
                print("FAIL the server exited (%s): %s" % (srv.p.returncode, srv.p.stderr.read()))
                failed += 1
                break
    finally:
        if srv.p.poll() is None:
            srv.p.kill()
            srv.p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("check_http_server: %s" % ("FAILED (%d)" % failed if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
