"""Opens N keep-alive connections to HOST:PORT, sends one request on each and
reads its answer, then holds them idle until stdin closes (or 120 s pass).
Prints 'ready' when all are idle. Used by run.sh to measure RSS per idle
connection."""
import socket, sys, select, time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
sockets = []
for _ in range(count):
    s = socket.create_connection((host, port))
    s.sendall(request)
    sockets.append(s)
for s in sockets:
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
print("ready", flush=True)
select.select([sys.stdin], [], [], 120)
for s in sockets:
    s.close()
