#!/usr/bin/env python3
"""Replays the sessions of walkthrough.md over raw sockets and checks every byte the server sends.

Transcript lines (inside ```session blocks): `X> line` is sent on connection X (CRLF added, <KEY> replaced),
`X< line` must be the next line received on X exactly (with its CRLF), `X~ line` the same with every run of digits
and the weekday free, `X# close` closes X, `X# closed ...` expects the server to close X. Connections open on first
use. At the end no connection may hold a byte nobody expected.

    walkthrough.py [--key KEY] [--host H] [--port P] [--file walkthrough.md]
"""

import os
import re
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import parse, parser  # noqa: E402

WEEKDAY = r'\((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\)'
SYNC = re.compile(rb'\[SYNC:\d\d\.\d\d\.\d{4}_\d\d:\d\d:\d\d\]\r\n')


def steps(markdown):
    out = []
    for block in re.findall(r'^```session\n(.*?)^```', markdown, re.M | re.S):
        for n, line in enumerate(block.splitlines()):
            m = re.fullmatch(r'([A-Z])([<>~#]) (.*)', line)
            if not m:
                raise ValueError(f'not a transcript line: {line!r}')
            out.append((m.group(1), m.group(2), m.group(3)))
    return out


def shape(expected):
    """A regex for a `~` line: digit runs and weekdays may differ."""
    pattern = ''
    for token in re.split(r'(\(\w{3}\)|\d+)', expected):
        if token == '':
            continue
        if re.fullmatch(r'\d+', token):
            pattern += r'\d+'
        elif re.fullmatch(r'\(\w{3}\)', token) and not token[1:-1].isdigit():
            pattern += WEEKDAY
        else:
            pattern += re.escape(token)
    return re.compile(pattern + r'\r\n')


class Wire:
    def __init__(self, name, host, port):
        self.name = name
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.eof = False
        self.syncs = 0

    def fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def line(self, timeout=5.0):
        """The next line; liveness lines (not part of the transcript) are counted and skipped."""
        while True:
            got = self._line(timeout)
            if got is None or not SYNC.fullmatch(got):
                return got
            self.syncs += 1

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buf and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.fill(left)
        if b'\n' not in self.buf:
            return None
        i = self.buf.index(b'\n') + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def leftover(self, wait):
        deadline = time.monotonic() + wait
        while not self.eof and time.monotonic() < deadline:
            self.fill(max(0.01, deadline - time.monotonic()))
        return self.buf


def main(argv=None):
    p = parser('Replays walkthrough.md against a server.')
    p.add_argument('--file', default=os.path.join(HERE, 'walkthrough.md'))
    args = parse(p, argv)
    with open(args.file, encoding='utf-8') as f:
        script = steps(f.read())
    wires = {}
    checked = sent = syncs = 0

    def fail(msg):
        print(f'walkthrough FAILED at step {i + 1}: {msg}', flush=True)
        return 1

    for i, (who, op, text) in enumerate(script):
        text = text.replace('<KEY>', args.key)
        if op == '>':
            if who not in wires:
                wires[who] = Wire(who, args.host, args.port)
            wires[who].sock.sendall(text.encode('latin1') + b'\r\n')
            sent += 1
            continue
        w = wires.get(who)
        if w is None:
            return fail(f'{who} is not open')
        if op == '#':
            if text == 'close':
                syncs += w.syncs
                w.sock.close()
                del wires[who]
                time.sleep(0.3)  # the server sees the close; the next steps depend on it
            elif text.startswith('closed'):
                rest = w.leftover(5.0)
                if not w.eof or rest:
                    return fail(f'{who}: expected the server to close, have {rest!r} (eof={w.eof})')
                syncs += w.syncs
                w.sock.close()
                del wires[who]
            else:
                return fail(f'unknown action {text!r}')
            continue
        got = w.line()
        if got is None:
            return fail(f'{who}: expected {text!r}, got nothing (buffered: {w.buf!r})')
        want = (text + '\r\n').encode('latin1')
        ok = got == want if op == '<' else shape(text).fullmatch(got.decode('latin1')) is not None
        if not ok:
            return fail(f'{who}: expected {want!r}{" (shape)" if op == "~" else ""}, got {got!r}')
        checked += 1
    for who, w in sorted(wires.items()):
        rest = w.leftover(0.3)
        while SYNC.match(rest):
            rest = rest[SYNC.match(rest).end() :]
            syncs += 1
        if rest:
            return fail(f'{who}: unexpected bytes at the end: {rest!r}')
        syncs += w.syncs
        w.sock.close()
    note = f' ({syncs} [SYNC:...] lines skipped)' if syncs else ''
    print(f'walkthrough OK: {sent} lines sent, {checked} lines received and checked byte for byte{note}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
