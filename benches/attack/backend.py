"""The backend every proxy of the attack probe forwards to (standard library
only), on 127.0.0.1.

    python3 backend.py PORT CONTROL_PORT

On PORT (HTTP/1.1, keep-alive, a thread per connection):
  GET /         200 "ok"
  GET /big      200, 16 MiB written in 64 KiB pieces
  GET /slow     200 after 2 s
  POST /upload  reads the body (Content-Length), then 200 "ok"
While stalled, every request on PORT is read and not answered until the
stall ends (at most 60 s); the proxy may give up on it first.

On CONTROL_PORT (one line per connection): "stall", "unstall", "count"
(requests seen so far), "inflight" (requests being served now).
Prints "ready" once both listen."""
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = 16 << 20
PIECE = b"x" * (64 << 10)
stalled = threading.Event()
unstalled = threading.Event()
unstalled.set()
lock = threading.Lock()
counts = {"requests": 0, "inflight": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body=b"ok\n"):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def serve(self):
        with lock:
            counts["requests"] += 1
            counts["inflight"] += 1
        try:
            if stalled.is_set():
                # Answered late, once the stall ends (at most 60 s).
                unstalled.wait(60)
            if self.command == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                left = length
                while left > 0:
                    data = self.rfile.read(min(left, 65536))
                    if not data:
                        self.close_connection = True
                        return
                    left -= len(data)
                self.answer()
            elif self.path.startswith("/big"):
                self.send_response(200)
                self.send_header("Content-Length", str(BIG))
                self.end_headers()
                for _ in range(BIG // len(PIECE)):
                    self.wfile.write(PIECE)
            elif self.path.startswith("/slow"):
                time.sleep(2)
                self.answer()
            else:
                self.answer()
        except OSError:
            self.close_connection = True
        finally:
            with lock:
                counts["inflight"] -= 1

    do_GET = serve
    do_POST = serve
    do_HEAD = serve


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a proxy closing a connection mid-request is expected here


class Control(socketserver.StreamRequestHandler):
    def handle(self):
        command = self.rfile.readline().strip().decode()
        if command == "stall":
            unstalled.clear()
            stalled.set()
            reply = "stalled"
        elif command == "unstall":
            stalled.clear()
            unstalled.set()
            reply = "unstalled"
        elif command == "count":
            reply = str(counts["requests"])
        elif command == "inflight":
            reply = str(counts["inflight"])
        else:
            reply = "?"
        self.wfile.write((reply + "\n").encode())


class ControlServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port, control_port = int(sys.argv[1]), int(sys.argv[2])
    server = Server(("127.0.0.1", port), Handler)
    control = ControlServer(("127.0.0.1", control_port), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
