#!/usr/bin/python3
"""A QMP client framed the way QEMU's `qemu.qmp` library frames messages.

Usage: qmp_client.py SOCKET [COMMAND [ARGS-JSON]]...

Connects to the UNIX socket SOCKET, reads the greeting, then runs each
COMMAND in turn (with its arguments when the next word starts with "{").
Each request is sent as qemu.qmp sends it: json.dumps(msg), no trailing
newline. Replies are read as JSON values with a raw decoder, whatever the
line breaks. Events are skipped. Prints one JSON line per message kept:
{"greeting": ...} and then {"command": NAME, "reply": ...}. Exits 0 when
every reply came (errors included: the test judges them), 1 on a framing
or connection failure, with the reason on stderr.
"""
import json
import socket
import sys

TIMEOUT_S = 30.0


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(path)
        self.buf = ""
        self.decoder = json.JSONDecoder()
        self.next_id = 1

    def read_value(self):
        """The next complete JSON value from the server."""
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    value, end = self.decoder.raw_decode(text)
                    self.buf = text[end:]
                    return value
                except json.JSONDecodeError:
                    pass  # incomplete: read more
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            # The server must send valid UTF-8: strict decoding checks it.
            self.buf += data.decode("utf-8")

    def execute(self, name, arguments=None):
        msg = {"execute": name, "id": "c%d" % self.next_id}
        self.next_id += 1
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode("utf-8"))  # no newline
        while True:
            reply = self.read_value()
            if "event" in reply:
                continue
            if reply.get("id") != msg["id"]:
                raise ValueError("reply for another request: %r" % reply)
            return reply


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    try:
        c = Client(argv[1])
        greeting = c.read_value()
        print(json.dumps({"greeting": greeting}), flush=True)
        qemu = greeting["QMP"]["version"]["qemu"]
        for k in ("major", "minor", "micro"):
            int(qemu[k])
        args = argv[2:]
        i = 0
        while i < len(args):
            name = args[i]
            arguments = None
            if i + 1 < len(args) and args[i + 1].startswith("{"):
                arguments = json.loads(args[i + 1])
                i += 1
            i += 1
            reply = c.execute(name, arguments)
            print(json.dumps({"command": name, "reply": reply}), flush=True)
    except (OSError, ValueError, KeyError, ConnectionError, UnicodeDecodeError) as e:
        sys.stderr.write("qmp_client: %s: %s\n" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
