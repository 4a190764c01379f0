"""P2Pcluster device client: one file, Python 3.9+ standard library only.

A device opens one TCP connection (optionally TLS), registers an ID under its account's KEY and sends
``TCP:`` commands; the server answers every command with exactly one reply line, in order, while pushes
(``PUSH:<DATA>``), presence events (``PRESENCE:<ID>:ONLINE|OFFLINE``) and liveness lines (``[SYNC:...]``)
arrive interleaved on the same socket. This client sorts them: each command returns its own reply, pushes go
to a callback or a queue. The protocol is docs/PROTOCOL.md; the secure sessions are docs/security.md.

    import p2pcluster
    with p2pcluster.Client('127.0.0.1', 8080, KEY, id='lamp') as lamp:
        lamp.push('switch', 'hello')             # -> 'DATA_SENT'; a [FAIL:...] raises P2PError(code)
        for data in lamp.pushes(timeout=60):     # or Client(..., on_push=callback)
            print('got', data)

Threads: one I/O thread per connection does all socket reads and writes; callbacks (on_push, on_presence,
on_sync, on_raw, on_reconnect, on_disconnect) run on one dispatcher thread, in arrival order, and may call
the client. Every public method is thread-safe.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import queue
import random
import re
import selectors
import socket
import ssl
import threading
import time as _time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Deque, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

__all__ = [
    'Client',
    'connect',
    'P2PError',
    'DisconnectedError',
    'ReplyTimeout',
    'ServerProofError',
    'BadArgument',
    'RawActiveError',
    'OperatorError',
    'CLIENT_CODES',
    'PERMANENT_CODES',
    'PushResult',
    'GroupResult',
    'LegacyTime',
    'Presence',
    'Status',
    'RawWriter',
    'RawReader',
    'Operator',
    'md5_hex',
    'hmac_hex',
    'stcp_session_key',
    'dstcp_key',
    'dstcp_field',
    'hstcp_proof',
    'hstcp_mac',
    'tls_psk',
]

__version__ = '0.1.0'

log = logging.getLogger('p2pcluster')

Data = Union[str, bytes]


# ------------------------------------------------------------------------------------------------ errors


#: Codes of failures the client detects itself (the same as the TypeScript client's CLIENT_CODES).
CLIENT_CODES = frozenset(
    ['CONNECTION_LOST', 'CLOSED', 'TIMEOUT', 'RAW_ACTIVE', 'BAD_ARGUMENT', 'PROTOCOL', 'SERVER_PROOF']
)

#: Server codes after which registering again cannot succeed: reconnecting gives up on them.
PERMANENT_CODES = frozenset(
    ['INVALID_KEY', 'NOKEY', 'INVALID_USERID', 'INVALID_DATA', 'INVALID_FORMAT', 'SECURE_REQUIRED', 'SERVER_PROOF']
)


class P2PError(Exception):
    """A failure. ``code`` is the server's FAIL code (``[FAIL:REM_ID]`` -> ``'REM_ID'``, ``server`` True) or one of
    CLIENT_CODES for failures the client detects (``server`` False). ``reply`` is the server's line, ``command`` the
    command it answered, with the KEY field masked."""

    def __init__(self, code: str, reply: str = '', command: str = '', message: str = '', server: bool = False) -> None:
        self.code = code
        self.reply = reply
        self.command = command
        self.server = server
        super().__init__(message or (f'{reply} (for {command})' if command else reply or code))


class DisconnectedError(P2PError, ConnectionError):
    """No reply because the connection ended first (``CONNECTION_LOST``: the command may or may not have run), or
    because there is no connection (``CLOSED``)."""

    def __init__(self, message: str = 'not connected', command: str = '', code: str = 'CLOSED') -> None:
        P2PError.__init__(self, code, '', command, message)


class ReplyTimeout(P2PError, TimeoutError):
    """No reply (push, event, stream bytes) within the timeout: code ``TIMEOUT``."""

    def __init__(self, command: str = '', message: str = 'no reply in time') -> None:
        P2PError.__init__(self, 'TIMEOUT', '', command, message)


class ServerProofError(P2PError):
    """The server's proof in a secure-session activation does not match the KEY: not our server (``SERVER_PROOF``)."""

    def __init__(self, reply: str) -> None:
        P2PError.__init__(self, 'SERVER_PROOF', reply, '', f'server proof mismatch in {reply}')


class BadArgument(P2PError, ValueError):
    """An argument that cannot be sent: a line break in a payload, a ':' in an ID... (``BAD_ARGUMENT``)."""

    def __init__(self, message: str) -> None:
        P2PError.__init__(self, 'BAD_ARGUMENT', '', '', message)


class RawActiveError(P2PError, RuntimeError):
    """This connection carries a RAW stream: it takes no commands (``RAW_ACTIVE``)."""

    def __init__(self, message: str = 'this connection carries a RAW stream: no commands until the link ends') -> None:
        P2PError.__init__(self, 'RAW_ACTIVE', '', '', message)


class OperatorError(P2PError):
    """An operator REST API error: ``status`` is the HTTP status, ``code`` the API's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        P2PError.__init__(self, code, '', '', f'HTTP {status} {code}: {message}')


# ------------------------------------------------------------------------------------------------ secure sessions
# docs/security.md: KEY bytes are the ASCII of its 32 upper-case hex characters; strings are latin1.


def md5_hex(s: str) -> str:
    return hashlib.md5(s.encode('latin1')).hexdigest().upper()


def hmac_hex(key: str, msg: str) -> str:
    return hmac.new(key.encode('latin1'), msg.encode('latin1'), hashlib.sha256).hexdigest().upper()


def stcp_session_key(key: str, rnd: str) -> str:
    """STCP: MD5HEX(KEY+RND), the KEY field of every command of the session."""
    return md5_hex(key + rnd)


def dstcp_key(key: str, rnd: str, f: str) -> str:
    """DSTCP: MD5HEX(KEY+RND+F) for a command whose checked field is F."""
    return md5_hex(key + rnd + f)


def dstcp_field(after_key: str, registered: bool) -> str:
    """DSTCP's F: of the fields after the KEY, the first before registration, the second after it ('' if none)."""
    fields = after_key.split(':') if after_key != '' else []
    i = 1 if registered else 0
    return fields[i] if i < len(fields) else ''


def hstcp_proof(key: str, cli_rnd: str, rnd: str) -> str:
    """HSTCP: the server's proof HMAC_SHA256_HEX(KEY, "S:"+CLIRND+":"+RND)."""
    return hmac_hex(key, f'S:{cli_rnd}:{rnd}')


def hstcp_mac(key: str, rnd: str, n: int, line: str) -> str:
    """HSTCP: the KEY field of the n-th command, whose line with an empty KEY field is ``line``."""
    return hmac_hex(key, f'C:{rnd}:{n}:{line}')[:32]


def tls_psk(key: str) -> bytes:
    """TLS-PSK: the pre-shared key of an account (identity = its e-mail)."""
    return hmac.new(key.encode('latin1'), b'P2PC-TLS-PSK', hashlib.sha256).digest()


# ------------------------------------------------------------------------------------------------ small types


class Presence(NamedTuple):
    """A ``PRESENCE:<ID>:ONLINE|OFFLINE`` event."""

    id: str
    online: bool


class Status(NamedTuple):
    """A STATUS answer: ``last_seen`` (Unix seconds) is None while online."""

    online: bool
    last_seen: Optional[int]


def _text(data: Data) -> str:
    return data.decode('latin1') if isinstance(data, (bytes, bytearray)) else str(data)


def _field(value: Data, what: str) -> str:
    s = _text(value)
    if '\n' in s or '\r' in s:
        raise BadArgument(f'{what} cannot contain CR or LF (they end a line): {s!r}')
    try:
        s.encode('latin1')
    except UnicodeEncodeError:
        raise BadArgument(f'{what} must be latin1 text (send UTF-8 as bytes: text.encode()): {s!r}') from None
    return s


def _name(value: str, what: str) -> str:
    s = _field(value, what)
    if s == '' or ':' in s:
        raise BadArgument(f'{what} must be a non-empty name without ":": {s!r}')
    return s


class PushResult(str):
    """The reply to a push to one device: ``'DATA_SENT'`` or ``'DATA_HELD'`` (stored for an offline device)."""

    @property
    def held(self) -> bool:
        return self == 'DATA_HELD'


class GroupResult(str):
    """The reply to a group push, ``'ALL_3'`` or ``'2/3'``, with ``delivered`` and ``total`` as numbers."""

    @property
    def delivered(self) -> int:
        return int(self[4:]) if self.startswith('ALL_') else int(self.split('/')[0])

    @property
    def total(self) -> int:
        return int(self[4:]) if self.startswith('ALL_') else int(self.split('/')[1])


class LegacyTime(NamedTuple):
    """The legacy TIME reply ``[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]``, parsed."""

    zone: str
    weekday: str
    day: int
    month: int
    year: int
    time: str  # HH:mm:ss, 24-hour
    unix: int
    raw: str  # the reply without brackets


_LEGACY_TIME = re.compile(r'([^:\]]+):\(([A-Za-z]+)\)\((\d{1,2}),(\d{2}),(\d{4})\)\((\d{2}:\d{2}:\d{2})\)\((-?\d+)\)')


def parse_legacy_time(body: str) -> LegacyTime:
    m = _LEGACY_TIME.fullmatch(body)
    if m is None:
        raise P2PError('PROTOCOL', body, 'TCP:TIME', f'unexpected TIME reply {body!r}')
    z, wd, d, mo, y, t, u = m.groups()
    return LegacyTime(z, wd, int(d), int(mo), int(y), t, int(u), body)


def _push_result(r: str) -> Union[PushResult, GroupResult]:
    if r in ('DATA_SENT', 'DATA_HELD'):
        return PushResult(r)
    if re.fullmatch(r'ALL_\d+|\d+/\d+', r):
        return GroupResult(r)
    raise P2PError('PROTOCOL', f'[OK:{r}]', 'TCP:PUSH', f'unexpected reply [OK:{r}] to a push')


def parse_reply(line: str, command: str = '') -> str:
    """The text of a reply: ``[OK:X]`` -> ``'X'``, ``[IST:(...)]`` -> ``'IST:(...)'``; ``[FAIL:C]`` raises P2PError(C)."""
    if line.startswith('[FAIL:') and line.endswith(']'):
        raise P2PError(line[6:-1], line, command, server=True)
    if line.startswith('[OK:') and line.endswith(']'):
        return line[4:-1]
    if line.startswith('[') and line.endswith(']'):
        return line[1:-1]
    raise P2PError('PROTOCOL', line, command, f'unexpected reply {line!r} to {command}')


# Replies to commands the server rejects before checking the KEY field: an HSTCP session does not advance.
_PRE_AUTH_FAILS = frozenset(
    f'[FAIL:{c}]' for c in ('INVALID_KEY', 'NOID', 'INVALID_CMD', 'RATE_LIMIT', 'LINE_TOO_LONG', 'UNKNOWN_COMMAND')
)


def _hstcp_advanced(sub: str, rest: Optional[str], reply: str) -> bool:
    """Did the server accept the MAC of this command (and so advance n)? Mirrors the server's order of checks."""
    if reply in _PRE_AUTH_FAILS:
        return False
    if reply == '[FAIL:INVALID_FORMAT]':
        # Missing fields are refused before the KEY is checked, except EMAIL/SMS whose arguments are only
        # split after it.
        return sub in ('EMAIL', 'SMS') and rest is not None
    return True


# ------------------------------------------------------------------------------------------------ one connection


class _Pending:
    __slots__ = ('command', 'event', 'reply', 'abandoned')

    def __init__(self, command: str) -> None:
        self.command = command  # for messages: the KEY field is never shown
        self.event = threading.Event()
        self.reply: Optional[str] = None  # None when the connection ended first
        self.abandoned = False


class _Link:
    """One socket: an I/O thread, line framing, the FIFO of commands waiting for replies, and the RAW modes."""

    HIGH_WATER = 256 * 1024  # bytes queued for the socket before a RAW writer blocks
    RAW_HIGH = 1024 * 1024  # RAW bytes received and not read before the socket is left unread (backpressure)

    def __init__(self, client: 'Client', sock: socket.socket) -> None:
        self.client = client
        self.sock = sock
        self.lock = threading.Condition(threading.Lock())
        self.out = bytearray()
        self.inbuf = bytearray()
        self.pending: Deque[_Pending] = collections.deque()
        self.closed = False
        self.half_close = False  # graceful end requested: FIN after the queued bytes, then read until EOF
        self.raw_end = threading.Event()  # set by RawReader.finish(); acted on by the I/O thread
        self.raw_in = False  # receiving a RAW stream (after PUSHRAW:)
        self.raw_buf = bytearray()
        self.raw_writer: Optional[RawWriter] = None
        self.raw_opening = False  # a RAW:<ID> command is in flight: nothing may follow it
        self.raw_reader: Optional[RawReader] = None  # the incoming stream's reader (after PUSHRAW:)
        self.raw_total = 0  # stream bytes received, and taken by the reader: positions in the stream
        self.raw_taken = 0
        # Full duplex: the reply to our own RAW:<ID>, sent while we receive a stream, comes inside that stream;
        # it is the first line from this stream position on (the peer waits for our PUSHRAW: before writing).
        self.reply_at: Optional[int] = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.thread = threading.Thread(target=self._run, name='p2pcluster-io', daemon=True)

    def start(self) -> None:
        self.thread.start()

    # ---------------------------------------------------------------- writing

    def _wake(self) -> None:
        try:
            self.wake_w.send(b'\0')
        except OSError:
            pass

    def write(self, data: bytes, pending: Optional[_Pending] = None) -> None:
        """Queues bytes (and, atomically with them, the command waiting for a reply)."""
        with self.lock:
            if self.closed or self.half_close:
                raise DisconnectedError('connection closed', pending.command if pending else '')
            if pending is not None:
                self.pending.append(pending)
            was_empty = len(self.out) == 0
            self.out += data
        if was_empty:
            self._wake()

    def write_blocking(self, data: bytes, timeout: Optional[float]) -> None:
        """Queues bytes, waiting while more than HIGH_WATER bytes are queued (the server's backpressure)."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        view = memoryview(data)
        while len(view) > 0:
            with self.lock:
                while not self.closed and len(self.out) >= self.HIGH_WATER:
                    left = None if deadline is None else deadline - _time.monotonic()
                    if left is not None and left <= 0:
                        raise ReplyTimeout('RAW', 'the RAW stream did not drain in time')
                    self.lock.wait(left)
                if self.closed:
                    raise DisconnectedError('connection closed during the RAW stream', 'RAW')
                if self.raw_writer is not None and self.raw_writer.broken:
                    raise P2PError('REM_LINK', '[FAIL:REM_LINK]', 'RAW', 'the RAW reader went away')
                room = self.HIGH_WATER - len(self.out)
                was_empty = len(self.out) == 0
                self.out += view[:room]
                view = view[room:]
            if was_empty:
                self._wake()

    def flush(self, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else _time.monotonic() + timeout
        with self.lock:
            while not self.closed and len(self.out) > 0:
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.lock.wait(left)
            return len(self.out) == 0

    def shutdown(self, graceful: bool = False) -> None:
        """Ends the connection (pending commands fail with DisconnectedError). ``graceful``: after the queued
        bytes, half-close and read until the server closes too, so no byte in flight is lost to a reset."""
        with self.lock:
            if self.closed:
                return
            if graceful and not isinstance(self.sock, ssl.SSLSocket):
                self.half_close = True
            else:
                self.closed = True
            self.lock.notify_all()
        self._wake()

    # ---------------------------------------------------------------- the I/O thread

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sock = self.sock
        error: Optional[BaseException] = None
        fin_deadline: Optional[float] = None
        try:
            sel.register(self.wake_r, selectors.EVENT_READ)
            sel.register(sock, selectors.EVENT_READ)
            interest = selectors.EVENT_READ
            while True:
                if self.raw_end.is_set():
                    self.raw_end.clear()
                    self._leave_raw()
                with self.lock:
                    if self.closed:
                        break
                    want_write = len(self.out) > 0
                    # A RAW stream the application does not read fast enough stays in the socket: the server
                    # then slows the writer down (§7) instead of this process buffering without bound.
                    want_read = not (self.raw_in and len(self.raw_buf) >= self.RAW_HIGH)
                    fin = self.half_close and not want_write and fin_deadline is None
                if fin:
                    sock.shutdown(socket.SHUT_WR)
                    fin_deadline = _time.monotonic() + 2.0
                wanted = (selectors.EVENT_READ if want_read else 0) | (selectors.EVENT_WRITE if want_write else 0)
                if wanted != interest:
                    if interest == 0:
                        sel.register(sock, wanted)
                    elif wanted == 0:
                        sel.unregister(sock)
                    else:
                        sel.modify(sock, wanted)
                    interest = wanted
                wait = None if fin_deadline is None else fin_deadline - _time.monotonic()
                if wait is not None and wait <= 0:
                    break
                for key, mask in sel.select(wait):
                    if key.fileobj is self.wake_r:
                        try:
                            while self.wake_r.recv(4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                        continue
                    if mask & selectors.EVENT_READ and not self._read():
                        if fin_deadline is not None:
                            return  # the graceful end: the server closed its side too
                        raise ConnectionResetError('the server closed the connection')
                    if mask & selectors.EVENT_WRITE:
                        self._send()
        except (OSError, ValueError) as e:
            error = e
        finally:
            sel.close()
            self._finish(error)

    def _read(self) -> bool:
        sock = self.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            if not data:
                return False
            self._received(data)
            # TLS may hold decrypted bytes that select() cannot see.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                return True

    def _send(self) -> None:
        with self.lock:
            chunk = bytes(self.out[:65536])
        if not chunk:
            return
        try:
            n = self.sock.send(chunk)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        with self.lock:
            del self.out[:n]
            self.lock.notify_all()

    def _finish(self, error: Optional[BaseException]) -> None:
        with self.lock:
            self.closed = True
            waiting = list(self.pending)
            self.pending.clear()
            self.lock.notify_all()
        for p in waiting:
            p.event.set()  # reply None: DisconnectedError for the waiter
        for s in (self.sock, self.wake_r, self.wake_w):
            try:
                s.close()
            except OSError:
                pass
        self.client._link_closed(self, error)

    # ---------------------------------------------------------------- framing and sorting

    def _received(self, data: bytes) -> None:
        if self.raw_in:  # raw_in changes on this thread only
            self._stream(data)
            return
        self.inbuf += data
        self._lines()

    def _stream(self, data: bytes) -> None:
        reply = None
        with self.lock:
            self.raw_buf += data
            self.raw_total += len(data)
            if self.reply_at is not None:
                start = max(0, self.reply_at - self.raw_taken)
                end = self.raw_buf.find(b'\n', start)
                if end >= 0:
                    reply = bytes(self.raw_buf[start:end]).rstrip(b'\r').decode('latin1')
                    del self.raw_buf[start : end + 1]
                    self.raw_total -= end + 1 - start
                    self.reply_at = None
            self.lock.notify_all()
        if reply is not None:
            self._line(reply)

    def _lines(self) -> None:
        buf = self.inbuf
        while not self.raw_in:
            i = buf.find(b'\n')
            if i < 0:
                return
            line = bytes(buf[:i])
            del buf[: i + 1]
            if line.endswith(b'\r'):
                line = line[:-1]
            self._line(line.decode('latin1'))
        # PUSHRAW: everything after it is stream data.
        rest = bytes(buf)
        buf.clear()
        self._stream(rest)

    def _line(self, line: str) -> None:
        client = self.client
        if line.startswith('PUSH:'):
            client._event('push', line[5:])
        elif line.startswith('PRESENCE:'):
            body = line[9:]
            i = body.rfind(':')
            client._event('presence', Presence(body[:i], body[i + 1 :] == 'ONLINE'))
        elif line.startswith('[SYNC:'):
            client._event('sync', line[6:-1] if line.endswith(']') else line[6:])
        elif line == 'PUSHRAW:':
            reader = RawReader(client, self)
            with self.lock:
                self.raw_in = True
                self.raw_total = self.raw_taken = 0
                self.raw_reader = reader
                self.lock.notify_all()
            client._event('raw', reader)
        else:
            with self.lock:
                p = self.pending.popleft() if self.pending else None
                writer = self.raw_writer
            if p is not None:
                p.reply = line
                p.event.set()
            elif writer is not None and line == '[FAIL:REM_LINK]':
                # §7: the reader went away; the write that found out was dropped and the server parses what
                # follows as commands: this connection is no longer a clean stream.
                writer.broken = True
                log.info('RAW link to %s broken: the reader went away', writer.target)
                client._raw_broken(self)
            else:
                log.warning('p2pcluster: unsolicited line %r', line)
                client.last_unsolicited = line

    def end_raw(self, timeout: float = 5.0) -> None:
        """Back to lines after a RAW stream (bytes past it are parsed as lines). The I/O thread makes the
        switch; this waits for it, so a command sent next has its reply read as a line."""
        self.raw_end.set()
        self._wake()
        if threading.current_thread() is self.thread:
            return
        deadline = _time.monotonic() + timeout
        with self.lock:
            while self.raw_in and not self.closed and _time.monotonic() < deadline:
                self.lock.wait(0.05)

    def _leave_raw(self) -> None:
        if not self.raw_in:
            return
        with self.lock:
            self.raw_in = False
            self.raw_reader = None
            self.reply_at = None
            rest = bytes(self.raw_buf)
            self.raw_buf.clear()
            self.lock.notify_all()
        self.inbuf[:0] = rest
        self._lines()


# ------------------------------------------------------------------------------------------------ RAW channel


class RawWriter:
    """The sending end of a RAW link (§7): every byte written goes to the target device, unparsed.

    The link is one-way and ends when either side disconnects: ``close()`` ends this connection (the client
    reconnects and re-registers when reconnect is on). While linked, the connection takes no commands."""

    def __init__(self, client: 'Client', link: _Link, target: str) -> None:
        self.client = client
        self.link = link
        self.target = target
        self.broken = False
        self.sent = 0
        #: Full duplex: the stream the peer sends back (see Client.open_raw).
        self.reader: Optional[RawReader] = None

    def write(self, data: bytes, timeout: Optional[float] = None) -> int:
        """Queues bytes for the target, blocking while the server holds the stream back (backpressure).
        Raises P2PError('REM_LINK') once the reader has gone away."""
        if self.broken:
            raise P2PError('REM_LINK', '[FAIL:REM_LINK]', 'RAW', 'the RAW reader went away')
        self.link.write_blocking(bytes(data), timeout)
        self.sent += len(data)
        return len(data)

    sendall = write

    def write_file(self, f: Any, chunk: int = 65536, pace: Optional[float] = None) -> int:
        """Streams a binary file object; ``pace`` (bytes per second) sends at that rate, for live media."""
        total = 0
        started = _time.monotonic()
        while True:
            b = f.read(chunk)
            if not b:
                return total
            self.write(b)
            total += len(b)
            if pace:
                ahead = total / pace - (_time.monotonic() - started)
                if ahead > 0:
                    _time.sleep(ahead)

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Waits until every queued byte is handed to the socket."""
        return self.link.flush(timeout)

    def close(self, timeout: Optional[float] = 30.0) -> None:
        """Ends the link by closing this connection once every byte is sent; with reconnect on, waits (up to
        ``timeout``) until the client is connected and registered again."""
        self.link.flush(timeout)
        self.client._end_link(self.link, graceful=True)
        if self.client.reconnect and not self.client._closing:
            self.client.wait_connected(timeout)

    def __enter__(self) -> 'RawWriter':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RawReader:
    """The receiving end of a RAW link: the bytes after ``PUSHRAW:``. The protocol does not mark the end of a
    stream (agree on a length first, e.g. with a PUSH); call ``finish()`` when the stream is over to read
    lines again. The connection takes no pushes while it receives a stream."""

    def __init__(self, client: 'Client', link: _Link) -> None:
        self.client = client
        self.link = link
        self.received = 0

    def read(self, n: int = 65536, timeout: Optional[float] = None) -> bytes:
        """Up to n bytes, waiting for at least one; b'' when the connection ended."""
        link = self.link
        deadline = None if timeout is None else _time.monotonic() + timeout
        with link.lock:
            while not link.raw_buf and not link.closed:
                left = None if deadline is None else deadline - _time.monotonic()
                if left is not None and left <= 0:
                    raise ReplyTimeout('RAW', 'no RAW bytes in time')
                link.lock.wait(left)
            was_full = len(link.raw_buf) >= link.RAW_HIGH
            out = bytes(link.raw_buf[:n])
            del link.raw_buf[:n]
            link.raw_taken += len(out)
        if was_full:
            link._wake()  # read the socket again
        self.received += len(out)
        return out

    def read_exactly(self, n: int, timeout: Optional[float] = None) -> bytes:
        """Exactly n bytes; DisconnectedError if the connection ends first, ReplyTimeout after timeout."""
        deadline = None if timeout is None else _time.monotonic() + timeout
        parts: List[bytes] = []
        got = 0
        while got < n:
            left = None if deadline is None else max(0.0, deadline - _time.monotonic())
            b = self.read(n - got, left)
            if not b:
                raise DisconnectedError(f'connection ended after {got} of {n} RAW bytes', 'RAW')
            parts.append(b)
            got += len(b)
        return b''.join(parts)

    def chunks(self, total: int, timeout: Optional[float] = None) -> Iterator[bytes]:
        """Yields the next ``total`` bytes as they arrive."""
        got = 0
        while got < total:
            b = self.read(min(65536, total - got), timeout)
            if not b:
                raise DisconnectedError(f'connection ended after {got} of {total} RAW bytes', 'RAW')
            got += len(b)
            yield b

    def finish(self) -> None:
        """The stream is over: read lines (pushes, replies) again; bytes past it are taken as lines."""
        self.link.end_raw()


# ------------------------------------------------------------------------------------------------ the client

_SECURE = ('STCP', 'DSTCP', 'HSTCP')


class Client:
    """A P2Pcluster device.

    ``Client(host, port, key, id=None, ...)`` connects at once unless ``autoconnect=False`` (then call
    ``connect()``). Options:

    - ``id``: register this ID on connect (and after every reconnect).
    - ``secure``: ``'STCP'``, ``'DSTCP'`` or ``'HSTCP'`` (recommended) with ``uid`` = the account e-mail.
    - ``tls``: True (system CAs) or an ``ssl.SSLContext``; ``server_hostname`` for the certificate check.
    - ``reconnect``: reconnect with exponential backoff (``backoff=(first, max)`` seconds) after the
      connection is lost, then restore the secure session, the ID, the WATCHes and the WILL.
    - ``timeout``: default seconds to wait for a reply.
    - ``keepalive``: answer ``[SYNC:...]`` with a ``GID`` so a quiet device is never taken for dead (§2).
    - callbacks ``on_push(data)``, ``on_presence(Presence)``, ``on_sync(text)``, ``on_raw(RawReader)``,
      ``on_reconnect(client)``, ``on_disconnect(client, error)``. Without ``on_push``/``on_presence`` the
      pushes and events are queued for ``recv()``/``pushes()`` and ``next_presence()``.
    """

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 8080,
        key: str = '',
        id: Optional[str] = None,
        *,
        secure: Optional[str] = None,
        uid: Optional[str] = None,
        tls: Union[bool, ssl.SSLContext] = False,
        server_hostname: Optional[str] = None,
        reconnect: bool = True,
        backoff: Sequence[float] = (0.1, 5.0),
        max_attempts: Optional[int] = None,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        keepalive: bool = True,
        on_push: Optional[Callable[[str], Any]] = None,
        on_presence: Optional[Callable[[Presence], Any]] = None,
        on_sync: Optional[Callable[[str], Any]] = None,
        on_raw: Optional[Callable[[RawReader], Any]] = None,
        on_reconnect: Optional[Callable[['Client'], Any]] = None,
        on_disconnect: Optional[Callable[['Client', Optional[BaseException]], Any]] = None,
        autoconnect: bool = True,
    ) -> None:
        if secure is not None:
            secure = secure.upper()
            if secure not in _SECURE:
                raise ValueError(f'secure must be one of {_SECURE}, not {secure!r}')
            if not uid:
                raise ValueError('a secure session needs uid= (the account e-mail)')
        self.host = host
        self.port = int(port)
        self.key = key.upper()
        self.uid = uid
        self.tls = tls
        self.server_hostname = server_hostname
        self.reconnect = reconnect
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.on_push = on_push
        self.on_presence = on_presence
        self.on_sync = on_sync
        self.on_raw = on_raw
        self.on_reconnect = on_reconnect
        self.on_disconnect = on_disconnect
        #: The device ID (canonical upper case) while registered.
        self.id: Optional[str] = None
        self._want_id = id
        self._secure = secure
        self._watches: List[str] = []
        self._will: Optional[str] = None
        #: The last line that answered no command (e.g. ``[FAIL:SERVER_FULL]`` on connect).
        self.last_unsolicited: Optional[str] = None
        #: Connections made (1 after connect(), +1 per reconnect).
        self.connections = 0
        #: Why reconnecting gave up (a P2PError with a code of PERMANENT_CODES), if it did.
        self.last_error: Optional[BaseException] = None
        self._lock = threading.RLock()
        self._cmd_lock = threading.Lock()  # secure sessions: one command in flight at a time
        self._link: Optional[_Link] = None
        self._ready = threading.Event()
        self._closing = False
        self._reconnecting = False
        self._session: Optional[Dict[str, Any]] = None  # mode, rnd, seq, registered
        self._pushes: 'queue.Queue[str]' = queue.Queue()
        self._presence: 'queue.Queue[Presence]' = queue.Queue()
        self._raw_readers: 'queue.Queue[RawReader]' = queue.Queue()
        self._events: 'queue.Queue[Optional[tuple]]' = queue.Queue()
        self._dispatcher: Optional[threading.Thread] = None
        if autoconnect:
            self.connect()

    # ---------------------------------------------------------------- lifecycle

    def connect(self) -> 'Client':
        """Connects, activates the secure session and registers the ID given at construction. Errors raise."""
        with self._lock:
            if self._link is not None and not self._link.closed:
                return self
            self._closing = False
        self._establish()
        return self

    def close(self, goodbye: bool = True, timeout: float = 2.0) -> None:
        """Ends the client: with ``goodbye``, a registered device sends ``REMID`` first (no WILL fires)."""
        with self._lock:
            self._closing = True
            link = self._link
        if link is not None and not link.closed:
            if goodbye and self.id is not None and link.raw_writer is None and not link.raw_in:
                try:
                    self._request('REMID', None, timeout=timeout, internal=True)
                except P2PError:
                    pass
            link.flush(timeout)
            link.shutdown(graceful=True)
            link.thread.join(timeout + 2.5)
        self._ready.clear()
        self._events.put(None)

    def drop(self) -> None:
        """Drops the connection as a network failure would (no REMID: a WILL fires); reconnects if enabled."""
        with self._lock:
            link = self._link
        if link is not None:
            try:
                link.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            link.shutdown()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def secure(self) -> Optional[str]:
        return self._secure

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits for the connection (and its restore after a reconnect) to be ready."""
        return self._ready.wait(timeout)

    def __enter__(self) -> 'Client':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open_socket(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.tls:
                ctx = self.tls if isinstance(self.tls, ssl.SSLContext) else ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=self.server_hostname or self.host)
            sock.setblocking(False)
            return sock
        except BaseException:
            sock.close()
            raise

    def _establish(self) -> None:
        """Opens a connection and restores the session state on it; raises on failure."""
        sock = self._open_socket()
        link = _Link(self, sock)
        with self._lock:
            self._link = link
            self._session = None
            self.id = None
        link.start()
        try:
            if self._secure is not None:
                self._activate(self._secure)
            if self._want_id is not None:
                self._register(self._want_id)
            for target in list(self._watches):
                self._request('WATCH', target, internal=True)
            if self._will is not None:
                self._request('WILL', self._will, internal=True)
        except BaseException:
            link.shutdown()
            raise
        with self._lock:
            if link is not self._link or link.closed:
                raise DisconnectedError('the connection ended while it was being set up')
            self.connections += 1
            self._ready.set()

    def _link_closed(self, link: _Link, error: Optional[BaseException]) -> None:
        """From a link's I/O thread when its socket is gone."""
        with self._lock:
            if link is not self._link:
                return
            self._ready.clear()
            self.id = None
            closing = self._closing
            start = self.reconnect and not closing and not self._reconnecting and self.connections > 0
            if start:
                self._reconnecting = True
        self._event('disconnect', error)
        if start:
            threading.Thread(target=self._reconnect_loop, name='p2pcluster-reconnect', daemon=True).start()

    def _reconnect_loop(self) -> None:
        delay, most = self.backoff
        attempt = 0
        try:
            while not self._closing:
                attempt += 1
                _time.sleep(delay * random.uniform(0.8, 1.2))
                if self._closing:
                    return
                try:
                    self._establish()
                    if self._closing:  # close() was called meanwhile
                        link = self._link
                        if link is not None:
                            link.shutdown()
                        self._ready.clear()
                        return
                    log.info('p2pcluster: reconnected after %d attempt(s)', attempt)
                    self._event('reconnect', None)
                    return
                except (OSError, P2PError, ssl.SSLError) as e:
                    log.info('p2pcluster: reconnect attempt %d failed: %s', attempt, e)
                    if isinstance(e, P2PError) and e.code in PERMANENT_CODES:
                        log.warning('p2pcluster: giving up reconnecting: %s', e)
                        self.last_error = e
                        self._closing = True  # commands fail with CLOSED from now on
                        return
                    if self.max_attempts is not None and attempt >= self.max_attempts:
                        log.warning('p2pcluster: giving up after %d attempts', attempt)
                        return
                    delay = min(most, delay * 2)
        finally:
            with self._lock:
                self._reconnecting = False

    def _end_link(self, link: _Link, graceful: bool = False) -> None:
        """Ends a connection on purpose (RAW writer done or broken); reconnects when enabled."""
        link.shutdown(graceful)
        if threading.current_thread() is not link.thread:
            link.thread.join(5.0)

    def _raw_broken(self, link: _Link) -> None:
        threading.Thread(target=self._end_link, args=(link,), daemon=True).start()

    # ---------------------------------------------------------------- events

    def _event(self, kind: str, value: Any) -> None:
        if kind == 'push' and self.on_push is None:
            self._pushes.put(value)
            return
        if kind == 'presence' and self.on_presence is None:
            self._presence.put(value)
            return
        if kind == 'raw' and self.on_raw is None:
            self._raw_readers.put(value)
            return
        if kind == 'sync' and self.keepalive:
            threading.Thread(target=self._keepalive, daemon=True).start()
        if kind in ('sync', 'disconnect', 'reconnect') and getattr(self, f'on_{kind}') is None:
            return
        self._ensure_dispatcher()
        self._events.put((kind, value))

    def _ensure_dispatcher(self) -> None:
        with self._lock:
            if self._dispatcher is None or not self._dispatcher.is_alive():
                self._dispatcher = threading.Thread(target=self._dispatch, name='p2pcluster-callbacks', daemon=True)
                self._dispatcher.start()

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                if self._closing:
                    return
                continue
            kind, value = item
            try:
                if kind == 'push':
                    self.on_push(value)  # type: ignore[misc]
                elif kind == 'presence':
                    self.on_presence(value)  # type: ignore[misc]
                elif kind == 'sync':
                    self.on_sync(value)  # type: ignore[misc]
                elif kind == 'raw':
                    self.on_raw(value)  # type: ignore[misc]
                elif kind == 'reconnect':
                    self.on_reconnect(self)  # type: ignore[misc]
                elif kind == 'disconnect':
                    self.on_disconnect(self, value)  # type: ignore[misc]
            except Exception:
                log.exception('p2pcluster: %s callback failed', kind)

    def _keepalive(self) -> None:
        link = self._link
        # Never while a RAW stream runs: a reply would land inside the stream.
        if self.id is None or not self._ready.is_set() or link is None or link.raw_in or link.raw_writer:
            return
        try:
            self._request('GID', None, internal=True)
        except P2PError:
            pass

    # ---------------------------------------------------------------- receiving

    def recv(self, timeout: Optional[float] = None) -> str:
        """The next push's DATA (from the queue: only when no on_push callback is set). Raises ReplyTimeout."""
        try:
            return self._pushes.get(timeout=timeout)
        except queue.Empty:
            raise ReplyTimeout('recv', 'no push in time') from None

    def messages(self, timeout: Optional[float] = None) -> Iterator[str]:
        """The same as pushes()."""
        return self.pushes(timeout)

    def pushes(self, timeout: Optional[float] = None) -> Iterator[str]:
        """Iterates over pushes as they arrive; stops after ``timeout`` seconds without one (None: never)."""
        while True:
            try:
                yield self._pushes.get(timeout=timeout)
            except queue.Empty:
                return

    def pending_pushes(self) -> List[str]:
        """The queued pushes, without waiting."""
        out = []
        while True:
            try:
                out.append(self._pushes.get_nowait())
            except queue.Empty:
                return out

    def next_presence(self, timeout: Optional[float] = None) -> Presence:
        """The next PRESENCE event (only when no on_presence callback is set). Raises ReplyTimeout."""
        try:
            return self._presence.get(timeout=timeout)
        except queue.Empty:
            raise ReplyTimeout('presence', 'no presence event in time') from None

    def accept_raw(self, timeout: Optional[float] = None) -> RawReader:
        """Waits for an incoming RAW stream (``PUSHRAW:``) and returns its reader."""
        try:
            return self._raw_readers.get(timeout=timeout)
        except queue.Empty:
            raise ReplyTimeout('RAW', 'no RAW stream in time') from None

    # ---------------------------------------------------------------- commands

    def _key_field(self, sub: str, rest: Optional[str]) -> str:
        ses = self._session
        if ses is None:
            return self.key
        mode = ses['mode']
        if mode == 'STCP':
            return ses['skey']
        if mode == 'DSTCP':
            return dstcp_key(self.key, ses['rnd'], dstcp_field(rest or '', ses['registered']))
        line = f'TCP:{sub}:' + ('' if rest is None else ':' + rest)
        return hstcp_mac(self.key, ses['rnd'], ses['seq'], line)

    def _request(
        self,
        sub: str,
        rest: Optional[str],
        timeout: Optional[float] = None,
        internal: bool = False,
        raw_open: bool = False,
    ) -> str:
        """Sends ``TCP:<SUB>:<KEY>[:<rest>]`` and returns the reply line (not parsed)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = _time.monotonic() + timeout
        if not internal:
            if not self._ready.is_set():
                with self._lock:
                    gone = self._link is None or (not self.reconnect and self._link.closed) or self._closing
                if gone or not self._ready.wait(timeout):
                    raise DisconnectedError('not connected', f'TCP:{sub}')
        secure = self._session is not None
        if secure:
            if not self._cmd_lock.acquire(timeout=max(0.0, deadline - _time.monotonic())):
                raise ReplyTimeout(f'TCP:{sub}', 'waiting for the previous secure command')
        try:
            with self._lock:
                link = self._link
                if link is None or link.closed:
                    raise DisconnectedError('not connected', f'TCP:{sub}')
                if link.raw_writer is not None or link.raw_opening or (link.raw_in and not raw_open):
                    raise RawActiveError()
                if raw_open and link.raw_in:
                    with link.lock:
                        link.reply_at = link.raw_total
                ses = self._session
                tail = '' if rest is None else ':' + rest
                command = f'TCP:{sub}:<key>{tail}'
                p = _Pending(command)
                link.write(f'TCP:{sub}:{self._key_field(sub, rest)}{tail}\r\n'.encode('latin1'), p)
                # After RAW:<ID> every byte may be stream data: no command may follow until the reply.
                link.raw_opening = raw_open
            if not p.event.wait(max(0.0, deadline - _time.monotonic())):
                p.abandoned = True
                if ses is not None:
                    # The session's state is unknown now: start over on a fresh connection.
                    self._end_link(link)
                raise ReplyTimeout(command)
            if p.reply is None:
                raise DisconnectedError('the connection ended before the reply', command, 'CONNECTION_LOST')
            reply = p.reply
            if ses is not None and ses['mode'] == 'HSTCP' and _hstcp_advanced(sub, rest, reply):
                ses['seq'] += 1
            if ses is not None and sub == 'ID' and reply.startswith('[OK:'):
                ses['registered'] = True
            elif ses is not None and sub == 'REMID' and reply.startswith('[OK:'):
                ses['registered'] = False
            return reply
        finally:
            if secure:
                self._cmd_lock.release()

    def command(self, sub: str, rest: Optional[str] = None, timeout: Optional[float] = None) -> str:
        """Any ``TCP:`` command: ``command('PUSH', 'RID:LAMP:on')`` -> ``'DATA_SENT'``. The KEY field is filled in
        (as the secure session requires). A ``[FAIL:<code>]`` raises P2PError(code)."""
        sub = sub.upper()
        if rest is not None:
            rest = _field(rest, 'command')
        reply = self._request(sub, rest, timeout)
        return parse_reply(reply, f'TCP:{sub}:<key>' + ('' if rest is None else ':' + rest))

    def pipeline(self, commands: Sequence[Sequence[Optional[str]]], timeout: Optional[float] = None) -> List[Any]:
        """Sends many ``(sub, rest)`` commands in one write and returns their results in order: the reply text, or
        the P2PError of a failure (not raised). Secure sessions send them one by one."""
        if self._session is not None:
            out: List[Any] = []
            for sub, rest in commands:
                try:
                    out.append(self.command(str(sub), rest, timeout))
                except P2PError as e:
                    if isinstance(e, DisconnectedError):
                        raise
                    out.append(e)
            return out
        timeout = self.timeout if timeout is None else timeout
        if not self._ready.wait(timeout):
            raise DisconnectedError('not connected')
        pend: List[_Pending] = []
        for sub, rest in commands:
            r = None if rest is None else _field(rest, 'command')
            pend.append(_Pending(f'TCP:{str(sub).upper()}:<key>' + ('' if r is None else ':' + r)))
        data = ''.join(p.command.replace('<key>', self.key, 1) + '\r\n' for p in pend).encode('latin1')
        with self._lock:
            link = self._link
            if link is None or link.closed:
                raise DisconnectedError('not connected')
            with link.lock:
                if link.closed or link.half_close:
                    raise DisconnectedError('not connected')
                link.pending.extend(pend)
                was_empty = len(link.out) == 0
                link.out += data
            if was_empty:
                link._wake()
        deadline = _time.monotonic() + timeout
        results: List[Any] = []
        for p in pend:
            if not p.event.wait(max(0.0, deadline - _time.monotonic())):
                p.abandoned = True
                raise ReplyTimeout(p.command)
            if p.reply is None:
                raise DisconnectedError('the connection ended before the reply', p.command, 'CONNECTION_LOST')
            try:
                results.append(parse_reply(p.reply, p.command))
            except P2PError as e:
                results.append(e)
        return results

    # identity

    def _register(self, device_id: str) -> str:
        device_id = _name(device_id, 'ID')
        reply = self._request('ID', device_id, internal=True)
        result = parse_reply(reply, 'TCP:ID')
        with self._lock:
            self.id = result
            self._want_id = result
        return result

    def register(self, device_id: str) -> str:
        """``TCP:ID``: registers ``device_id`` (restored after every reconnect); returns the canonical ID."""
        if not self._ready.wait(self.timeout):
            raise DisconnectedError('not connected', 'TCP:ID')
        return self._register(device_id)

    def unregister(self) -> str:
        """``TCP:REMID``: gives the ID up (no WILL fires; watches and the will are dropped). Stays connected."""
        result = self.command('REMID')
        with self._lock:
            self.id = None
            self._want_id = None
            self._watches.clear()
            self._will = None
        return result

    def gid(self) -> str:
        """``TCP:GID``: the ID this connection holds."""
        return self.command('GID')

    remid = unregister

    # pushes (§5). To one device: PushResult 'DATA_SENT' or 'DATA_HELD'. To a group: GroupResult 'ALL_3' or '2/3'
    # (.delivered, .total); nobody reached raises P2PError('NO_ID'). ALIAS answers as either.

    def _push(self, rest: str) -> Any:
        return _push_result(self.command('PUSH', rest))

    def push(self, device_id: str, data: Data) -> PushResult:
        """``RID``: to one device."""
        return self._push(f'RID:{_name(device_id, "ID")}:{_field(data, "data")}')

    def push_friends(self, data: Data) -> GroupResult:
        return self._push(f'FRIENDS:{_field(data, "data")}')

    def push_childs(self, data: Data) -> GroupResult:
        return self._push(f'CHILDS:{_field(data, "data")}')

    def push_allchilds(self, data: Data) -> GroupResult:
        return self._push(f'ALLCHILDS:{_field(data, "data")}')

    def push_parent(self, data: Data) -> PushResult:
        return self._push(f'PARENT:{_field(data, "data")}')

    def push_router(self, router: str, data: Data) -> GroupResult:
        """``RO``: every other member of the mesh router."""
        return self._push(f'RO:{_name(router, "router")}:{_field(data, "data")}')

    def push_alias(self, alias: str, data: Data) -> Union[PushResult, GroupResult]:
        """``ALIAS``: the device(s) the operator points the alias at."""
        return self._push(f'ALIAS:{_name(alias, "alias")}:{_field(data, "data")}')

    def push_to(self, target: str, data: Data) -> Union[PushResult, GroupResult]:
        """Any target: ``push_to('RO:GARDEN', 'on')``, ``push_to('FRIENDS', 'hi')``."""
        return self._push(f'{_field(target, "target")}:{_field(data, "data")}')

    # presence and will (§5a)

    def status(self, device_id: str) -> Status:
        """``TCP:STATUS``: Status(True, None) or Status(False, last_seen); P2PError('REM_ID') if never seen."""
        r = self.command('STATUS', _name(device_id, 'ID'))
        if r == 'ONLINE':
            return Status(True, None)
        if r.startswith('OFFLINE:'):
            return Status(False, int(r[8:]))
        raise P2PError('BAD_REPLY', r, 'TCP:STATUS')

    def watch(self, target: str) -> str:
        """``TCP:WATCH``: 'RID:<ID>', 'FRIENDS', 'CHILDS', 'ALLCHILDS', 'PARENT', 'RO:<R>', 'ALIAS:<A>'."""
        target = _field(target, 'target')
        r = self.command('WATCH', target)
        with self._lock:
            if target not in self._watches:
                self._watches.append(target)
        return r

    def unwatch(self, target: str) -> str:
        target = _field(target, 'target')
        r = self.command('UNWATCH', target)
        with self._lock:
            if target in self._watches:
                self._watches.remove(target)
        return r

    def will(self, target: str, data: Data) -> str:
        """``TCP:WILL``: DATA is pushed to TARGET if this connection ends without REMID."""
        rest = f'{_field(target, "target")}:{_field(data, "data")}'
        r = self.command('WILL', rest)
        with self._lock:
            self._will = rest
        return r

    def clear_will(self) -> str:
        r = self.command('WILL', 'CLEAR')
        with self._lock:
            self._will = None
        return r

    # services

    def time(self, zone: str = '+00:00', fmt: Optional[str] = None) -> Union[LegacyTime, str, int]:
        """``TCP:TIME`` with an offset (``+05:30``) or an IANA zone. Without ``fmt``: the legacy reply parsed,
        LegacyTime('IST', 'Thu', 26, 11, 2026, '02:13:39', 1795639419, ...); ``fmt`` 'ISO' or 'RFC2822': the text,
        'EPOCH' or 'EPOCHMS': a number."""
        arg = _field(zone, 'zone') + ('' if fmt is None else ':' + _field(fmt, 'format').upper())
        r = self.command('TIME', arg)
        if fmt is None:
            return parse_legacy_time(r)
        if fmt.upper() in ('EPOCH', 'EPOCHMS'):
            if not r.isdigit():
                raise P2PError('PROTOCOL', f'[OK:{r}]', 'TCP:TIME', f'unexpected TIME reply {r!r}')
            return int(r)
        return r

    def epoch(self) -> int:
        """The server's Unix time in seconds."""
        return int(self.time('+00:00', 'EPOCH'))

    def retdata(self, n: int) -> str:
        """``TCP:RETDATA``: the n-th oldest (1 = oldest) of the payloads this connection pushed lately."""
        if int(n) <= 0:
            raise BadArgument('retdata(n) takes n >= 1; retdata_all() gives them all')
        return self.command('RETDATA', str(int(n)))

    def retdata_all(self) -> List[str]:
        """``TCP:RETDATA:0``: all of them, oldest first (a payload holding '>' cannot be told apart)."""
        r = self.command('RETDATA', '0')
        if not r.startswith('>'):
            raise P2PError('PROTOCOL', f'[OK:{r}]', 'TCP:RETDATA', f'unexpected RETDATA reply {r!r}')
        return r[1:].split('>')

    def ping(self) -> float:
        """A GID round trip, in seconds."""
        t0 = _time.monotonic()
        self.gid()
        return _time.monotonic() - t0

    def email(self, to: str, subject: str, body: str) -> str:
        return self.command('EMAIL', f'{_field(to, "to")}:{_field(subject, "subject")}:{_field(body, "body")}')

    def sms(self, number: str, text: str) -> str:
        return self.command('SMS', f'{_field(number, "number")}:{_field(text, "text")}')

    # RAW (§7)

    def open_raw(self, device_id: str, duplex: bool = False, timeout: Optional[float] = None) -> RawWriter:
        """``TCP:PUSH:<KEY>:RAW:<ID>``: after ``[OK:LINK_SYNC]`` every byte written goes to the device.

        Full duplex (§7: each side links to the other): the side that starts calls ``open_raw(peer, duplex=True)``,
        which returns once the peer has linked back (``writer.reader`` is then the incoming stream); the peer, on
        ``accept_raw()``, calls ``open_raw(starter)`` (its ``[OK:LINK_SYNC]`` arrives inside the incoming stream and
        is taken out of it; the starter writes nothing until then). The connection takes no commands afterwards."""
        device_id = _name(device_id, 'ID')
        timeout = self.timeout if timeout is None else timeout
        link = self._link
        try:
            parse_reply(self._request('PUSH', f'RAW:{device_id}', timeout, raw_open=True), 'TCP:PUSH RAW')
        except BaseException:
            if link is not None:
                link.raw_opening = False
                link.reply_at = None
            raise
        with self._lock:
            link = self._link
            if link is None or link.closed:
                raise DisconnectedError('the connection ended after [OK:LINK_SYNC]', 'RAW', 'CONNECTION_LOST')
            writer = RawWriter(self, link, device_id.upper())
            with link.lock:
                link.raw_writer = writer
                link.raw_opening = False
                writer.reader = link.raw_reader
        if duplex and writer.reader is None:
            deadline = _time.monotonic() + timeout
            with link.lock:
                while link.raw_reader is None and not link.closed:
                    left = deadline - _time.monotonic()
                    if left <= 0:
                        raise ReplyTimeout('RAW', f'{device_id.upper()} did not link back in time')
                    link.lock.wait(left)
                writer.reader = link.raw_reader
            if writer.reader is None:
                raise DisconnectedError('the connection ended before the peer linked back', 'RAW', 'CONNECTION_LOST')
        return writer

    raw = open_raw

    # secure sessions (§9)

    def activate(self, mode: str) -> str:
        """Starts an STCP, DSTCP or HSTCP session (restored after reconnects); checks the server's proof."""
        mode = mode.upper()
        if mode not in _SECURE:
            raise ValueError(f'mode must be one of {_SECURE}')
        if not self.uid:
            raise ValueError('a secure session needs uid (the account e-mail)')
        rnd = self._activate(mode)
        self._secure = mode
        return rnd

    def _activate(self, mode: str) -> str:
        cli = os.urandom(8).hex().upper()
        line = f'{mode}:{self.uid}:ACTIVATE:{cli}:'
        with self._cmd_lock:
            reply = self._raw_line(line)
        body = parse_reply(reply, f'{mode} ACTIVATE')
        rnd, _, proof = body.partition(':')
        expected = hstcp_proof(self.key, cli, rnd) if mode == 'HSTCP' else md5_hex(self.key + cli)
        if not hmac.compare_digest(proof.upper(), expected):
            raise ServerProofError(reply)
        with self._lock:
            self._session = {
                'mode': mode,
                'rnd': rnd,
                'seq': 1,
                'skey': stcp_session_key(self.key, rnd) if mode == 'STCP' else '',
                'registered': self.id is not None,
            }
        return rnd

    def deactivate(self) -> str:
        """Ends the secure session: plain ``TCP:`` commands with the KEY from then on."""
        ses = self._session
        if ses is None:
            return 'NOT_ACTIVE'
        mode = ses['mode']
        line = f'{mode}:{self.uid}:DEACTIVATE:'
        with self._cmd_lock:
            if mode == 'HSTCP':
                line += hstcp_mac(self.key, ses['rnd'], ses['seq'], line)
            reply = self._raw_line(line)
        r = parse_reply(reply, f'{mode} DEACTIVATE')
        with self._lock:
            self._session = None
            self._secure = None
        return r

    def _raw_line(self, line: str, timeout: Optional[float] = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            link = self._link
            if link is None or link.closed:
                raise DisconnectedError('not connected', line)
            p = _Pending(line)
            link.write((line + '\r\n').encode('latin1'), p)
        if not p.event.wait(timeout):
            p.abandoned = True
            raise ReplyTimeout(line)
        if p.reply is None:
            raise DisconnectedError('the connection ended before the reply', line, 'CONNECTION_LOST')
        return p.reply


def connect(host: str, port: int, key: str, id: Optional[str] = None, **options: Any) -> Client:
    """``Client(host, port, key, id, **options)``, connected."""
    return Client(host, port, key, id, **options)


# ------------------------------------------------------------------------------------------------ operator API


class Operator:
    """A small client of the operator REST API (``/api/v1``), for setting up trees, routers and aliases.
    ``token`` is the account KEY (account calls) or the admin token; ``account`` is an e-mail or 'me'."""

    def __init__(self, base_url: str, token: str, account: str = 'me', timeout: float = 10.0) -> None:
        self.base = base_url.rstrip('/')
        self.token = token
        self.account = account
        self.timeout = timeout

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header('Authorization', f'Bearer {self.token}')
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                text = res.read().decode()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors='replace')
            try:
                err = json.loads(text)
                raise OperatorError(e.code, str(err.get('error')), str(err.get('message'))) from None
            except ValueError:
                raise OperatorError(e.code, 'HTTP', text) from None
        return json.loads(text) if text.strip() else None

    def _acct(self, suffix: str = '') -> str:
        return f'/api/v1/accounts/{urllib.parse.quote(self.account, safe="@")}{suffix}'

    @staticmethod
    def _seg(s: str) -> str:
        return urllib.parse.quote(s, safe='')

    def me(self) -> Dict[str, Any]:
        """The account: {'email', 'level', 'createdAt'}."""
        return self.call('GET', self._acct())

    def devices(self, all: bool = False) -> Dict[str, Any]:
        return self.call('GET', self._acct('/devices' + ('?all' if all else '')))

    def tree(self) -> Dict[str, Any]:
        return self.call('GET', self._acct('/tree'))

    def add_node(self, node_id: str, parent: Optional[str] = None) -> Dict[str, Any]:
        return self.call('POST', self._acct('/tree/nodes'), {'id': node_id, 'parent': parent})

    def move_node(self, node_id: str, parent: Optional[str]) -> Dict[str, Any]:
        return self.call('PATCH', self._acct(f'/tree/nodes/{self._seg(node_id)}'), {'parent': parent})

    def delete_node(self, node_id: str) -> Dict[str, Any]:
        return self.call('DELETE', self._acct(f'/tree/nodes/{self._seg(node_id)}'))

    def routers(self) -> Dict[str, Any]:
        return self.call('GET', self._acct('/routers'))

    def router(self, name: str) -> Dict[str, Any]:
        """{'name', 'members'}."""
        return self.call('GET', self._acct(f'/routers/{self._seg(name)}'))

    def add_router(self, name: str, members: Sequence[str] = ()) -> None:
        self.call('POST', self._acct('/routers'), {'name': name})
        for m in members:
            self.add_member(name, m)

    def delete_router(self, name: str) -> None:
        self.call('DELETE', self._acct(f'/routers/{self._seg(name)}'))

    def add_member(self, router: str, device_id: str) -> None:
        self.call('PUT', self._acct(f'/routers/{self._seg(router)}/members/{self._seg(device_id)}'))

    def remove_member(self, router: str, device_id: str) -> None:
        self.call('DELETE', self._acct(f'/routers/{self._seg(router)}/members/{self._seg(device_id)}'))

    def aliases(self) -> Dict[str, Any]:
        return self.call('GET', self._acct('/aliases'))

    def set_alias(self, name: str, targets: Union[str, Sequence[str]]) -> Dict[str, Any]:
        """Points alias ``name`` at one device or several (re-pointing applies to the next push)."""
        t = [targets] if isinstance(targets, str) else list(targets)
        return self.call('PUT', self._acct(f'/aliases/{self._seg(name)}'), {'targets': t})

    def delete_alias(self, name: str) -> None:
        self.call('DELETE', self._acct(f'/aliases/{self._seg(name)}'))
