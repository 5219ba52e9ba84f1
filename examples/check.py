#!/usr/bin/env python3
"""examples/check.py: runs the examples for ctest and checks their output.

  check.py run NAME BINDIR [--wrap "CMD ARGS"]
      Run example NAME (BINDIR/NAME), or the scenario of that name, and
      compare what it prints with expected/<program>.txt: one regular
      expression per line (lines starting with '#' are comments), matched
      in order against whole output lines; and require exit status 0.
      Timing values are printed by the examples but matched by patterns
      such as [0-9]+, never compared.
  check.py doc-blocks --extract DIR PAGE...
      Write every complete C program found in a ```c block of the pages to
      DIR/doc-<page>-<n>.c and print their paths, one per line.
  check.py doc-blocks --check PAGE...
      Fail on a ```c block that is neither a complete program (with a
      main()) nor marked with a first line /* fragment */.

Exit status 77 (ctest's skip) when the backend named by EVR_BACKEND is
refused by the kernel (io_uring disabled), as the test suite does.
"""
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 60


class Failure(Exception):
    pass


def wrapped(args, wrap):
    return shlex.split(wrap) + args if wrap else args


def expect(prog, out):
    """Compare out (text) with expected/<prog>.txt."""
    path = os.path.join(HERE, "expected", prog + ".txt")
    with open(path) as f:
        pats = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    lines = out.splitlines()
    for i, pat in enumerate(pats):
        if i >= len(lines):
            raise Failure("%s: output ends before line %d, expected /%s/" % (prog, i + 1, pat))
        if not re.fullmatch(pat, lines[i]):
            raise Failure("%s: line %d is %r, expected /%s/" % (prog, i + 1, lines[i], pat))
    if len(lines) > len(pats):
        raise Failure("%s: unexpected extra output from line %d: %r" % (prog, len(pats) + 1, lines[len(pats)]))


def refused_backend(text):
    b = os.environ.get("EVR_BACKEND", "")
    return b == "io_uring" and "evr_loop_new: operation not supported" in text


def run_simple(name, bindir, wrap, args=(), status=0):
    p = subprocess.run(wrapped([os.path.join(bindir, name)] + list(args), wrap),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=TIMEOUT)
    sys.stderr.write(p.stderr)
    if refused_backend(p.stderr):
        print("skipped: the kernel refuses io_uring")
        sys.exit(77)
    print(p.stdout, end="")
    if p.returncode != status:
        raise Failure("%s exited with %d, expected %d" % (name, p.returncode, status))
    return p.stdout


class Server:
    """A server example that prints 'listening ADDR:PORT' first."""

    def __init__(self, name, bindir, wrap, args=()):
        self.name = name
        # stderr goes to a file: a server that logs a lot never blocks on a
        # full pipe.
        self.errfile = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(wrapped([os.path.join(bindir, name)] + list(args), wrap),
                                  stdout=subprocess.PIPE, stderr=self.errfile, text=True)
        line = self.p.stdout.readline()
        m = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.p.wait(timeout=TIMEOUT)
            err = self.stderr()
            if refused_backend(err):
                print("skipped: the kernel refuses io_uring")
                sys.exit(77)
            self.p.kill()
            raise Failure("%s did not start: %r %s" % (name, line, err))
        self.first = line
        self.port = int(m.group(1))

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read()

    def stop(self, sig=signal.SIGTERM):
        """Send sig, wait, return (stdout including the first line, stderr)."""
        self.p.send_signal(sig)
        return self.wait()

    def wait(self):
        try:
            out, _ = self.p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.communicate()
            raise Failure("%s did not exit" % self.name)
        err = self.stderr()
        sys.stderr.write(err)
        out = self.first + out
        print(out, end="")
        if self.p.returncode != 0:
            raise Failure("%s exited with %d" % (self.name, self.p.returncode))
        return out, err


def free_port():
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenario_echo(bindir, wrap):
    srv = Server("tcp-echo-server", bindir, wrap, ["127.0.0.1:0"])
    try:
        out = run_simple("tcp-client", bindir, wrap, ["localhost", str(srv.port)])
        expect("tcp-client", out)
    finally:
        out, _ = srv.stop()
    expect("tcp-echo-server", out)


def scenario_client(bindir, wrap):
    scenario_echo(bindir, wrap)
    # Nobody listens: every address of localhost refuses.
    p = subprocess.run(wrapped([os.path.join(bindir, "tcp-client"), "localhost", str(free_port())], wrap),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    print(p.stdout + p.stderr, end="")
    if p.returncode != 1 or not re.search(r"^connect: connection refused \(ECONNREFUSED\)$", p.stderr, re.M):
        raise Failure("tcp-client to a closed port: status %d, %r" % (p.returncode, p.stderr))


def scenario_tls_echo(bindir, wrap):
    """docs/net.md's TLS program, with a CA and a server certificate for
    localhost made here by the openssl command."""
    if shutil.which("openssl") is None:
        print("skipped: no openssl command to make certificates")
        sys.exit(77)
    with tempfile.TemporaryDirectory() as d:
        def ossl(*args):
            subprocess.run(["openssl"] + list(args), check=True, timeout=TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
        crt, key, csr = os.path.join(d, "crt.pem"), os.path.join(d, "key.pem"), os.path.join(d, "req.pem")
        ext = os.path.join(d, "ext.cnf")
        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=example CA", "-keyout", ca_key, "-out", ca)
        ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=localhost", "-keyout", key, "-out", csr)
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost\n")
        ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "2", "-extfile", ext, "-out", crt)
        expect("tls-echo", run_simple("tls-echo", bindir, wrap, [crt, key, ca]))
        # A client that trusts another CA refuses the server.
        p = subprocess.run(wrapped([os.path.join(bindir, "tls-echo"), crt, key, crt], wrap),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=TIMEOUT)
        print(p.stdout + p.stderr, end="")
        if p.returncode != 1 or "client handshake: TLS error certificate verify failed" not in p.stderr:
            raise Failure("tls-echo with the wrong CA: status %d, %r" % (p.returncode, p.stderr))


def scenario_signals(bindir, wrap):
    srv = Server("signals", bindir, wrap)
    # Let it serve for a moment: a client connects and is answered.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as c:
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                break
            data += chunk
        if not data.startswith(b"hello"):
            raise Failure("signals: unexpected greeting %r" % data)
        # Stop while this client is still connected: the program drains it.
        srv.p.send_signal(signal.SIGTERM)
        rest = c.recv(100)
        if rest != b"bye\n":
            raise Failure("signals: expected a goodbye, got %r" % rest)
    out, _ = srv.wait()
    expect("signals", out)


class ChatClient:
    """A non-blocking chat client: a socket, its received lines, its output."""

    def __init__(self, port, nick, sel):
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setblocking(False)
        self.inbuf = b""
        self.lines = []
        self.outbuf = (nick + "\n").encode()
        self.closed = None
        self.reading = True
        self.sel = sel
        sel.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def send(self, data):
        self.outbuf += data

    def on_ready(self, mask):
        if mask & selectors.EVENT_WRITE and self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
                self.outbuf = self.outbuf[n:]
            except BlockingIOError:
                pass
        if mask & selectors.EVENT_READ and self.reading:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = None
            if not data:
                self.closed = "reset" if data is None else "eof"
                self.sel.unregister(self.sock)
                return
            self.inbuf += data
            *done, self.inbuf = self.inbuf.split(b"\n")
            self.lines.extend(l.decode() for l in done)
        self.update()

    def update(self):
        if self.closed:
            return
        ev = (selectors.EVENT_READ if self.reading else 0) | (selectors.EVENT_WRITE if self.outbuf else 0)
        if ev:
            self.sel.modify(self.sock, ev, self)
        else:
            self.sel.unregister(self.sock)
            self.closed = "idle"  # nothing more to do with it here


def pump(sel, until, what):
    """Run the selector until until() is true, within TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not until():
        if time.monotonic() > deadline:
            raise Failure("chat: timed out waiting for " + what)
        for key, mask in sel.select(timeout=0.5):
            key.data.on_ready(mask)


def scenario_chat(bindir, wrap, nclients=200, nmsgs=5):
    srv = Server("chat", bindir, wrap)
    try:
        # 1. Every line reaches every other client, in order.
        sel = selectors.DefaultSelector()
        cs = [ChatClient(srv.port, "u%d" % i, sel) for i in range(nclients)]
        pump(sel, lambda: all(c.lines for c in cs), "the welcomes")
        for c in cs:
            if c.lines != ["* welcome " + c.nick]:
                raise Failure("chat: %s got %r instead of its welcome" % (c.nick, c.lines[:3]))
            c.lines = []
            c.send(b"".join(b"m%d from %s\n" % (j, c.nick.encode()) for j in range(nmsgs)))
            c.update()
        want = (nclients - 1) * nmsgs
        pump(sel, lambda: all(len(c.lines) >= want for c in cs), "the broadcasts")
        for c in cs:
            got = {}
            for l in c.lines:
                nick, _, text = l.partition(": ")
                got.setdefault(nick, []).append(text)
            for o in cs:
                expect_lines = [] if o is c else ["m%d from %s" % (j, o.nick) for j in range(nmsgs)]
                if got.get(o.nick, []) != expect_lines:
                    raise Failure("chat: %s got %r from %s" % (c.nick, got.get(o.nick), o.nick))
        print("chat: %d clients, each got the %d lines of the %d others, in order" % (nclients, nmsgs, nclients - 1))
        for c in cs:
            c.sock.close()
        sel.close()

        # 2. A client that stops reading is dropped; the others are not held up.
        sel = selectors.DefaultSelector()
        flood, sleepy, reader = (ChatClient(srv.port, n, sel) for n in ("flood", "sleepy", "reader"))
        pump(sel, lambda: flood.lines and sleepy.lines and reader.lines, "the welcomes")
        sleepy.reading = False      # from now on it never reads
        sleepy.update()
        reader.lines = []
        total, window, size = 16000, 64, 1000
        sent = 0
        def more():
            nonlocal sent
            while sent < total and sent - len(reader.lines) < window:
                flood.send(b"%06d " % sent + b"x" * (size - 8) + b"\n")
                sent += 1
            flood.update()
            return len(reader.lines) >= total or reader.closed
        pump(sel, more, "the flood to reach the reader")
        if reader.closed:
            raise Failure("chat: the reader was dropped (%s)" % reader.closed)
        for i, l in enumerate(reader.lines):
            if not l.startswith("flood: %06d " % i):
                raise Failure("chat: reader line %d is %r" % (i, l[:40]))
        print("chat: a reader got all %d lines of %d bytes in order" % (total, size))
        # The server reset the sleepy client: reading now ends.
        sleepy.sock.setblocking(True)
        sleepy.sock.settimeout(TIMEOUT)
        try:
            while sleepy.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        print("chat: the client that stopped reading was dropped by the server")
        for c in (flood, sleepy, reader):
            c.sock.close()
        sel.close()
    except BaseException:
        srv.p.kill()
        srv.p.wait()
        sys.stderr.write(srv.stderr())
        raise
    out, err = srv.stop()
    if not re.search(r"^dropping sleepy: more than \d+ bytes queued", err, re.M):
        raise Failure("chat: the server did not log dropping the sleepy client")
    if re.search(r"^dropping (?!sleepy)", err, re.M):
        raise Failure("chat: the server dropped another client")
    expect("chat", out)
    m = re.search(r"largest write queue: (\d+) bytes \(high mark (\d+), largest write (\d+)\)", out)
    if int(m.group(1)) > int(m.group(2)) + int(m.group(3)):
        raise Failure("chat: a queue grew past the high mark plus one write")
    print("chat: queues stayed within the high mark plus one write")


SCENARIOS = {
    "chat": scenario_chat,
    "tcp-echo-server": scenario_echo,
    "tcp-client": scenario_client,
    "signals": scenario_signals,
    "tls-echo": scenario_tls_echo,
}


# ---------------------------------------------------------------- docs ---

FENCE = re.compile(r"^```c[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def doc_blocks(page):
    with open(page) as f:
        text = f.read()
    for n, m in enumerate(FENCE.finditer(text), 1):
        line = text.count("\n", 0, m.start()) + 1
        yield n, line, m.group(1)


def is_fragment(code):
    return code.lstrip().startswith("/* fragment */")


def is_program(code):
    return re.search(r"^int main\(", code, re.M) is not None


def cmd_doc_blocks(argv):
    mode, rest = argv[0], argv[1:]
    if mode == "--extract":
        outdir, pages = rest[0], rest[1:]
        os.makedirs(outdir, exist_ok=True)
        for page in pages:
            stem = re.sub(r"[^A-Za-z0-9]+", "-", os.path.splitext(os.path.basename(page))[0]).lower()
            for n, line, code in doc_blocks(page):
                if is_fragment(code) or not is_program(code):
                    continue
                path = os.path.join(outdir, "doc-%s-%d.c" % (stem, n))
                new = "/* %s, line %d */\n#line %d \"%s\"\n%s" % (os.path.basename(page), line, line + 1, page, code)
                old = None
                if os.path.exists(path):
                    with open(path) as f:
                        old = f.read()
                if old != new:
                    with open(path, "w") as f:
                        f.write(new)
                print(path)
        return 0
    bad = 0
    total = programs = 0
    for page in rest:
        for n, line, code in doc_blocks(page):
            total += 1
            if is_fragment(code):
                continue
            if is_program(code):
                programs += 1
                continue
            bad += 1
            print("%s:%d: a C block that is neither a complete program (no main()) "
                  "nor marked /* fragment */" % (page, line))
    print("%d C blocks: %d complete programs (built), %d fragments, %d unmarked"
          % (total, programs, total - programs - bad, bad))
    return 1 if bad else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "doc-blocks":
        return cmd_doc_blocks(sys.argv[2:])
    if len(sys.argv) < 4 or sys.argv[1] != "run":
        print(__doc__)
        return 2
    name, bindir = sys.argv[2], sys.argv[3]
    wrap = ""
    if len(sys.argv) > 5 and sys.argv[4] == "--wrap":
        wrap = sys.argv[5]
    try:
        if name in SCENARIOS:
            SCENARIOS[name](bindir, wrap)
        else:
            expect(name, run_simple(name, bindir, wrap))
    except (Failure, subprocess.TimeoutExpired) as e:
        print("FAILED: %s" % e)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
