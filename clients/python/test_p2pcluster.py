"""Tests of p2pcluster.py, standard library only: ``python3 -m unittest -v test_p2pcluster``.

Offline tests (always): the secure-session arithmetic against the vectors of docs/security.md, reply parsing,
and the client against a scripted fake server (framing across segments, interleaved PUSH/PRESENCE/SYNC lines,
PUSHRAW:, timeouts, reconnect with backoff).

Live tests (when P2PC_PORT is set; test/client-python.e2e.test.ts starts the real server and sets them):
P2PC_HOST, P2PC_PORT, P2PC_HTTP_PORT, P2PC_KEY, P2PC_ADMIN_TOKEN, and for TLS P2PC_TLS_PORT + P2PC_TLS_CA.
The server is expected to run with a short NODE.COM_CHK (SYNC lines interleave) and holding enabled.
"""

import hashlib
import os
import re
import socket
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import p2pcluster as p2p  # noqa: E402

HOST = os.environ.get('P2PC_HOST', '127.0.0.1')
PORT = int(os.environ.get('P2PC_PORT', '0') or 0)
HTTP_PORT = int(os.environ.get('P2PC_HTTP_PORT', '0') or 0)
KEY = os.environ.get('P2PC_KEY', '')
ADMIN = os.environ.get('P2PC_ADMIN_TOKEN', '')
TLS_PORT = int(os.environ.get('P2PC_TLS_PORT', '0') or 0)
TLS_CA = os.environ.get('P2PC_TLS_CA', '')
LIVE = PORT > 0 and KEY != ''

DOC_KEY = '0123456789ABCDEF0123456789ABCDEF'


def wait_until(pred, timeout=5.0, what='condition'):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ offline


class SecureVectors(unittest.TestCase):
    """docs/security.md, 'Worked example (test vectors)'."""

    def test_stcp(self):
        self.assertEqual(p2p.md5_hex(DOC_KEY + 'CAFEBABE01'), 'D795E6868A367DC5E18E6D233D6A90B8')
        self.assertEqual(p2p.stcp_session_key(DOC_KEY, '1A2B3C4D'), 'ECBE6C737531EE9CBDD2FE1E06A69752')

    def test_dstcp(self):
        self.assertEqual(p2p.dstcp_field('556', False), '556')
        self.assertEqual(p2p.dstcp_field('RID:555:hi', True), '555')
        self.assertEqual(p2p.dstcp_field('FRIENDS:hello', True), 'hello')
        self.assertEqual(p2p.dstcp_field('', True), '')
        self.assertEqual(p2p.dstcp_key(DOC_KEY, '1A2B3C4D', '556'), '6CDC931E5CAB9327EFDB96A9E3A7330F')
        self.assertEqual(p2p.dstcp_key(DOC_KEY, '1A2B3C4D', '555'), 'D7509FDF32A25AB1A885CA5D4D1756FD')

    def test_hstcp(self):
        self.assertEqual(
            p2p.hstcp_proof(DOC_KEY, '0011223344556677', '89ABCDEF01234567'),
            'C827ED6CACBE5F2D99C0005F983202DF6A81EC76F5FD316853C383A691A53E2E',
        )
        rnd = '89ABCDEF01234567'
        self.assertEqual(p2p.hstcp_mac(DOC_KEY, rnd, 1, 'TCP:ID::556'), '1AFEB52A384CBF0F8813242E81411A30')
        self.assertEqual(p2p.hstcp_mac(DOC_KEY, rnd, 2, 'TCP:PUSH::RID:555:hi'), '578A1C316215946DD956937B00AA403A')
        self.assertEqual(
            p2p.hstcp_mac(DOC_KEY, rnd, 3, 'HSTCP:demo@example.com:DEACTIVATE:'), '07941887F8BD678742DC9D9F2AEEE9F1'
        )

    def test_tls_psk(self):
        self.assertEqual(len(p2p.tls_psk(DOC_KEY)), 32)

    DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs', 'security.md')

    @unittest.skipUnless(os.path.exists(DOC), 'docs/security.md is not next to this checkout')
    def test_every_vector_of_the_doc(self):
        with open(self.DOC, encoding='utf-8') as f:
            text = f.read()
        block = re.search(r'```vectors\n(.*?)```', text, re.S).group(1)
        block = re.sub(r'\n\s+=', ' =', block)  # continuation lines
        key = re.search(r'^KEY = ([0-9A-F]{32})$', block, re.M).group(1)
        checked = 0
        for name, expr, value in re.findall(r'^(\w+\.\w+)\s*=\s*(.+?)\s*=\s*([0-9A-F]+)$', block, re.M):
            m = re.fullmatch(r'MD5HEX\(KEY((?:\+"[^"]*")+)\)', expr)
            if m:
                got = p2p.md5_hex(key + ''.join(re.findall(r'"([^"]*)"', m.group(1))))
            else:
                m = re.fullmatch(r'HMAC_SHA256_HEX\(KEY, "([^"]*)"\)(\[0:32\])?', expr)
                self.assertIsNotNone(m, f'{name}: cannot read {expr}')
                got = p2p.hmac_hex(key, m.group(1))[: 32 if m.group(2) else None]
            self.assertEqual(got, value, name)
            checked += 1
        self.assertGreaterEqual(checked, 8)


class Replies(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(p2p.parse_reply('[OK:DATA_SENT]'), 'DATA_SENT')
        self.assertEqual(p2p.parse_reply('[OK:>a>b:c]'), '>a>b:c')
        self.assertEqual(p2p.parse_reply('[IST:(Thu)(26,11,2026)(02:13:39)(1795639419)]'), 'IST:(Thu)(26,11,2026)(02:13:39)(1795639419)')
        with self.assertRaises(p2p.P2PError) as cm:
            p2p.parse_reply('[FAIL:REM_ID]', 'TCP:PUSH')
        self.assertEqual((cm.exception.code, cm.exception.reply, cm.exception.server), ('REM_ID', '[FAIL:REM_ID]', True))
        with self.assertRaises(p2p.P2PError) as cm:
            p2p.parse_reply('garbage')
        self.assertEqual((cm.exception.code, cm.exception.server), ('PROTOCOL', False))

    def test_typed_results(self):
        g = p2p._push_result('2/3')
        self.assertEqual((g, g.delivered, g.total), ('2/3', 2, 3))
        g = p2p._push_result('ALL_4')
        self.assertEqual((g.delivered, g.total), (4, 4))
        self.assertIsInstance(p2p._push_result('DATA_SENT'), p2p.PushResult)
        self.assertTrue(p2p._push_result('DATA_HELD').held)
        t = p2p.parse_legacy_time('IST:(Thu)(26,11,2026)(02:13:39)(1795639419)')
        self.assertEqual(t, p2p.LegacyTime('IST', 'Thu', 26, 11, 2026, '02:13:39', 1795639419, t.raw))
        with self.assertRaises(p2p.P2PError) as cm:
            p2p._push_result('WHAT')
        self.assertEqual(cm.exception.code, 'PROTOCOL')

    def test_hstcp_sequence_rule(self):
        adv = p2p._hstcp_advanced
        self.assertTrue(adv('PUSH', 'RID:X:y', '[OK:DATA_SENT]'))
        self.assertTrue(adv('PUSH', 'RID:X:y', '[FAIL:REM_ID]'))
        self.assertFalse(adv('PUSH', 'RID:X:y', '[FAIL:INVALID_KEY]'))
        self.assertFalse(adv('GID', None, '[FAIL:NOID]'))
        self.assertFalse(adv('BOGUS', None, '[FAIL:INVALID_CMD]'))
        self.assertFalse(adv('PUSH', None, '[FAIL:INVALID_FORMAT]'))
        self.assertFalse(adv('PUSH', 'RID:X:' + 'y' * 5000, '[FAIL:LINE_TOO_LONG]'))
        self.assertTrue(adv('EMAIL', 'a@b.c', '[FAIL:INVALID_FORMAT]'))

    def test_fields_are_one_line_of_latin1(self):
        c = p2p.Client(autoconnect=False, key=DOC_KEY)
        for bad in [lambda: c.push('X', 'two\nlines'), lambda: c.push('X', 'cr\r'), lambda: c.push('X', 'snow\u2603man')]:
            with self.assertRaises(ValueError) as cm:
                bad()
            self.assertEqual(cm.exception.code, 'BAD_ARGUMENT')
        with self.assertRaises(p2p.BadArgument):
            c.push('A:B', 'x')
        with self.assertRaises(p2p.DisconnectedError) as cm:
            c.push('X', 'fine')  # but not connected
        self.assertEqual(cm.exception.code, 'CLOSED')


class FakeServer:
    """A scripted server: ``script(conn, lines)`` runs per connection; ``lines()`` yields received lines."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.accepted = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.accepted), daemon=True).start()

    def _serve(self, conn, n):
        buf = b''

        def lines():
            nonlocal buf
            while True:
                while b'\n' not in buf:
                    try:
                        b = conn.recv(4096)
                    except OSError:
                        return
                    if not b:
                        return
                    buf += b
                i = buf.index(b'\n')
                line, buf = buf[:i].rstrip(b'\r').decode('latin1'), buf[i + 1 :]
                yield line

        try:
            self.script(conn, lines(), n)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.connections:
            try:
                c.close()
            except OSError:
                pass


def trickle(conn, data, step=1):
    """Sends data a few bytes per segment."""
    for i in range(0, len(data), step):
        conn.sendall(data[i : i + step])
        time.sleep(0.0005)


class AgainstFakeServer(unittest.TestCase):
    def test_replies_are_separated_from_pushes_presence_and_sync_in_any_segmentation(self):
        def script(conn, lines, n):
            for line in lines:
                if line.startswith('TCP:ID:'):
                    conn.sendall(b'[OK:DEV]\r\n')
                elif line.startswith('TCP:PUSH:'):
                    # deliveries and events before the reply, the reply split in the middle, a bare LF
                    trickle(conn, b'PUSH:a:b:c\r\nPRESENCE:X:ONLINE\r\n[SYNC:01.01.2026_00:00:00]\r\nPUSH:\r\n[OK:DA')
                    trickle(conn, b'TA_SENT]\r\nPRESENCE:X-1:OFFLINE\nPUSH:last\r\n', 3)
                elif line.startswith('TCP:GID:'):
                    conn.sendall(b'[OK:DEV]\r\n')

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        syncs = []
        c = p2p.Client('127.0.0.1', srv.port, DOC_KEY, id='dev', on_sync=syncs.append, keepalive=False)
        self.addCleanup(c.close, False)
        self.assertEqual(c.id, 'DEV')
        self.assertEqual(c.push('x', 'y'), 'DATA_SENT')
        self.assertEqual([c.recv(2), c.recv(2), c.recv(2)], ['a:b:c', '', 'last'])
        self.assertEqual(c.next_presence(2), p2p.Presence('X', True))
        self.assertEqual(c.next_presence(2), p2p.Presence('X-1', False))
        wait_until(lambda: syncs == ['01.01.2026_00:00:00'], 2, 'the SYNC callback')

    def test_pushraw_switches_to_bytes_and_finish_goes_back_to_lines(self):
        payload = bytes(range(256)) * 10 + b'\r\nPUSH:not a push\r\n'

        def script(conn, lines, n):
            for line in lines:
                if line.startswith('TCP:ID:'):
                    # the stream starts in the same segment as PUSHRAW:, and a line follows the stream
                    conn.sendall(b'[OK:DEV]\r\nPUSHRAW:\r\n' + payload + b'PUSH:after\r\n')

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        c = p2p.Client('127.0.0.1', srv.port, DOC_KEY, id='dev', keepalive=False)
        self.addCleanup(c.close, False)
        r = c.accept_raw(2)
        self.assertEqual(r.read_exactly(len(payload), 2), payload)
        r.finish()
        self.assertEqual(c.recv(2), 'after')
        self.assertEqual(c.pending_pushes(), [])

    def test_no_reply_raises_reply_timeout_and_later_replies_stay_in_order(self):
        def script(conn, lines, n):
            for line in lines:
                if line.startswith('TCP:TIME:'):
                    time.sleep(0.4)
                    conn.sendall(b'[OK:1]\r\n')
                else:
                    conn.sendall(b'[OK:DEV]\r\n')

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        c = p2p.Client('127.0.0.1', srv.port, DOC_KEY, keepalive=False)
        self.addCleanup(c.close, False)
        with self.assertRaises(p2p.ReplyTimeout) as cm:
            c.command('TIME', '+00:00', timeout=0.1)
        self.assertEqual(cm.exception.code, 'TIMEOUT')
        self.assertNotIn(DOC_KEY, str(cm.exception))
        # the late [OK:1] belongs to the abandoned command, not to this one
        self.assertEqual(c.gid(), 'DEV')

    def test_reconnects_with_backoff_and_registers_again(self):
        seen = []

        def script(conn, lines, n):
            for line in lines:
                seen.append((n, line.split(':')[1], line.split(':')[-1]))
                if line.startswith('TCP:ID:'):
                    if n == 2:
                        conn.sendall(b'[FAIL:NODEEXIST]\r\n')  # the old connection still holds the ID
                        return
                    conn.sendall(b'[OK:DEV]\r\n')
                elif line.startswith('TCP:WATCH:'):
                    conn.sendall(b'[OK:WATCHING]\r\n')
                elif line.startswith('TCP:WILL:'):
                    conn.sendall(b'[OK:WILL_SET]\r\n')
                    if n == 1:
                        time.sleep(0.05)
                        return  # then the first connection drops

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        events = []
        c = p2p.Client(
            '127.0.0.1',
            srv.port,
            DOC_KEY,
            autoconnect=False,
            backoff=(0.05, 0.2),
            on_reconnect=lambda cl: events.append('reconnect'),
            on_disconnect=lambda cl, e: events.append('disconnect'),
        )
        self.addCleanup(c.close, False)
        c._watches.append('RID:B')  # state to restore (set before the first connect, as after WATCH)
        c._will = 'PARENT:gone'
        c._want_id = 'dev'
        started = time.monotonic()
        c.connect()
        wait_until(lambda: c.connections == 2, 5, 'the reconnect')
        self.assertGreater(time.monotonic() - started, (0.05 + 0.1) * 0.8)  # backoff: 0.05 s, then 0.1 s
        self.assertEqual(c.id, 'DEV')
        self.assertEqual([s[:2] for s in seen if s[1] == 'ID'], [(1, 'ID'), (2, 'ID'), (3, 'ID')])
        self.assertEqual([s[:2] for s in seen if s[0] == 3], [(3, 'ID'), (3, 'WATCH'), (3, 'WILL')])
        wait_until(lambda: events == ['disconnect', 'disconnect', 'reconnect'], 2, 'the callbacks')

    def test_keepalive_answers_sync_with_gid(self):
        got = []

        def script(conn, lines, n):
            for line in lines:
                got.append(line.split(':')[1])
                if line.startswith('TCP:ID:'):
                    conn.sendall(b'[OK:DEV]\r\n')
                    time.sleep(0.2)
                    conn.sendall(b'[SYNC:01.01.2026_00:00:00]\r\n')
                elif line.startswith('TCP:GID:'):
                    conn.sendall(b'[OK:DEV]\r\n')

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        c = p2p.Client('127.0.0.1', srv.port, DOC_KEY, id='dev')
        self.addCleanup(c.close, False)
        wait_until(lambda: got == ['ID', 'GID'], 2, 'the keepalive GID')

    def test_server_proof_is_checked(self):
        def script(conn, lines, n):
            for line in lines:
                conn.sendall(b'[OK:0011223344556677:' + b'0' * 64 + b']\r\n')

        srv = FakeServer(script)
        self.addCleanup(srv.stop)
        with self.assertRaises(p2p.ServerProofError) as cm:
            p2p.Client('127.0.0.1', srv.port, DOC_KEY, secure='HSTCP', uid='a@b.c', reconnect=False)
        self.assertEqual(cm.exception.code, 'SERVER_PROOF')


# ------------------------------------------------------------------------------------------------ live


def uniq(prefix):
    return f'{prefix}-{uuid.uuid4().hex[:8]}'.upper()


@unittest.skipUnless(LIVE, 'P2PC_PORT/P2PC_KEY not set: no server to test against')
class Live(unittest.TestCase):
    """Against the real server; a fresh account per test when the admin token is given."""

    def setUp(self):
        self.clients = []
        self.key = KEY
        if ADMIN:
            admin = p2p.Operator(f'http://{HOST}:{HTTP_PORT}', ADMIN)
            acct = admin.call('POST', '/api/v1/accounts', {'email': f'{uuid.uuid4().hex[:12]}@py.test', 'level': 4})
            self.key = acct['key']
        self.op = p2p.Operator(f'http://{HOST}:{HTTP_PORT}', self.key)
        self.email = self.op.me()['email']

    def tearDown(self):
        for c in self.clients:
            c.close(goodbye=False, timeout=1)

    def dev(self, device_id=None, **kw):
        c = p2p.Client(HOST, PORT, self.key, device_id, **kw)
        self.clients.append(c)
        return c

    # -------------------------------------------------------------- basics

    def test_register_canonical_id_and_failures_carry_the_code(self):
        a = self.dev('lamp-1')
        self.assertEqual(a.id, 'LAMP-1')
        self.assertEqual(a.gid(), 'LAMP-1')
        with self.assertRaises(p2p.P2PError) as cm:
            a.register('other')
        self.assertEqual(cm.exception.code, 'LAMP-1')  # [FAIL:<CURRENT_ID>]
        with self.assertRaises(p2p.P2PError) as cm:
            self.dev('lamp-1', reconnect=False)
        self.assertEqual(cm.exception.code, 'NODEEXIST')
        with self.assertRaises(p2p.P2PError) as cm:
            a.push('nobody-here', 'x')
        self.assertEqual((cm.exception.code, cm.exception.reply), ('REM_ID', '[FAIL:REM_ID]'))
        self.assertNotIn(self.key, str(cm.exception))
        b = self.dev()
        with self.assertRaises(p2p.P2PError) as cm:
            b.gid()
        self.assertEqual(cm.exception.code, 'NOID')
        with self.assertRaises(p2p.P2PError) as cm:
            b.register('bad id!')
        self.assertEqual(cm.exception.code, 'INVALID_DATA')
        self.assertEqual(b.register('b'), 'B')
        self.assertEqual(b.unregister(), 'NODEREMOVED')
        self.assertIsNone(b.id)
        self.assertEqual(b.register('b2'), 'B2')

    def test_push_recv_iterator_and_callback(self):
        a = self.dev('a')
        b = self.dev('b')
        got = []
        c = self.dev('c', on_push=got.append)
        self.assertEqual(a.push('b', 'hello: world'), 'DATA_SENT')
        self.assertEqual(b.recv(5), 'hello: world')
        for i in range(5):
            a.push('b', f'm{i}')
        self.assertEqual(list(b.pushes(timeout=0.5)), [f'm{i}' for i in range(5)])
        self.assertEqual(a.push('c', b'\x00\xff bytes'), 'DATA_SENT')
        wait_until(lambda: got == ['\x00\xff bytes'], 5, 'the callback')
        self.assertEqual(got[0].encode('latin1'), b'\x00\xff bytes')

    def test_callbacks_may_call_the_client(self):
        echo = self.dev('echo')
        echo.on_push = lambda data: echo.push('asker', 'echo:' + data)
        asker = self.dev('asker')
        asker.push('echo', 'ping')
        self.assertEqual(asker.recv(5), 'echo:ping')

    def test_pipeline_keeps_replies_in_order_among_deliveries(self):
        a = self.dev('p-a')
        self.dev('p-b')
        b2 = self.dev('p-c')
        cmds = []
        for i in range(300):
            cmds.append(('PUSH', f'RID:P-B:{i}'))
            cmds.append(('PUSH', f'RID:P-A:self{i}'))  # deliveries to a, interleaved with its replies
            cmds.append(('PUSH', 'RID:NOBODY:x'))
        res = a.pipeline(cmds)
        self.assertEqual(res[0::3], ['DATA_SENT'] * 300)
        self.assertEqual(res[1::3], ['DATA_SENT'] * 300)
        self.assertTrue(all(isinstance(e, p2p.P2PError) and e.code == 'REM_ID' for e in res[2::3]))
        self.assertEqual([a.recv(5) for _ in range(300)], [f'self{i}' for i in range(300)])
        self.assertEqual(a.push_friends('all'), 'ALL_2')
        self.assertEqual(b2.recv(5), 'all')

    def test_sync_lines_interleave_and_keepalive(self):
        syncs = []
        a = self.dev('sy-a', on_sync=syncs.append)
        b = self.dev('sy-b')
        wait_until(lambda: len(syncs) >= 2, 5, 'two SYNC lines (the server runs with a short NODE.COM_CHK)')
        self.assertRegex(syncs[0], r'^\d\d\.\d\d\.\d{4}_\d\d:\d\d:\d\d$')
        for i in range(20):
            self.assertEqual(a.push('sy-b', str(i)), 'DATA_SENT')
            time.sleep(0.05)
        self.assertEqual([b.recv(5) for _ in range(20)], [str(i) for i in range(20)])
        self.assertEqual(a.status('sy-b'), p2p.Status(True, None))

    # -------------------------------------------------------------- topology through the operator API

    def test_groups_built_with_the_operator_api(self):
        op = self.op
        op.add_node('hub')
        op.add_node('s1', 'hub')
        op.add_node('s2', 'hub')
        op.add_node('leaf', 's1')
        op.add_router('garden', ['s1', 's2', 'leaf'])
        op.set_alias('light', 'leaf')
        hub, s1, s2, leaf = (self.dev(i) for i in ('hub', 's1', 's2', 'leaf'))
        self.assertEqual(hub.push_childs('c'), 'ALL_2')
        self.assertEqual([s1.recv(5), s2.recv(5)], ['c', 'c'])
        self.assertEqual(hub.push_allchilds('d'), 'ALL_3')
        self.assertEqual([s1.recv(5), s2.recv(5), leaf.recv(5)], ['d', 'd', 'd'])
        self.assertEqual(leaf.push_parent('up'), 'DATA_SENT')
        self.assertEqual(s1.recv(5), 'up')
        self.assertEqual(s1.push_friends('sib'), 'ALL_1')
        self.assertEqual(s2.recv(5), 'sib')
        self.assertEqual(s1.push_router('garden', 'ro'), 'ALL_2')
        self.assertEqual([s2.recv(5), leaf.recv(5)], ['ro', 'ro'])
        self.assertEqual(s1.push_alias('light', 'on'), 'DATA_SENT')
        self.assertEqual(leaf.recv(5), 'on')
        op.set_alias('light', ['s2', 'leaf'])
        self.assertEqual(s1.push_alias('light', 'both'), 'ALL_2')
        self.assertEqual(s1.push_to('ALIAS:light', 'again'), 'ALL_2')
        self.assertEqual([s2.recv(5), leaf.recv(5), s2.recv(5), leaf.recv(5)], ['both', 'both', 'again', 'again'])
        leaf.close()
        r = s1.push_router('garden', 'partial')
        self.assertEqual((r, r.delivered, r.total), ('1/2', 1, 2))
        self.assertIsInstance(s1.push('s2', 'x'), p2p.PushResult)
        with self.assertRaises(p2p.P2PError) as cm:
            leaf_only = self.dev('lonely')
            leaf_only.push_childs('nobody')
        self.assertEqual(cm.exception.code, 'NO_ID')
        for code, call in [
            ('NO_PARENT', lambda: hub.push_parent('x')),
            ('NO_ROUTER', lambda: hub.push_router('garden', 'x')),
            ('NO_ALIAS', lambda: hub.push_alias('none', 'x')),
            ('UNKNOWN_CMD', lambda: hub.push_to('NOWHERE', 'x')),
        ]:
            with self.assertRaises(p2p.P2PError) as cm:
                call()
            self.assertEqual(cm.exception.code, code)
        with self.assertRaises(p2p.OperatorError) as cm:
            op.add_node('x', 'no-such-parent')
        self.assertEqual((cm.exception.status, cm.exception.code), (422, 'NO_PARENT_NODE'))

    def test_held_messages_arrive_on_registration(self):
        a = self.dev('h-a')
        b = self.dev('h-b')
        b.close()
        wait_until(lambda: a.status('h-b').online is False, 5, 'H-B offline')
        self.assertEqual(a.push('h-b', 'one'), 'DATA_HELD')
        self.assertEqual(a.push('h-b', 'two'), 'DATA_HELD')
        b = self.dev('h-b')
        self.assertEqual([b.recv(5), b.recv(5)], ['one', 'two'])

    # -------------------------------------------------------------- presence, will, time, retdata

    def test_status_watch_and_will(self):
        w = self.dev('w-watcher')
        self.assertEqual(w.watch('RID:w-pump'), 'WATCHING')
        pump = self.dev('w-pump')
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', True))
        self.assertEqual(w.status('w-pump'), p2p.Status(True, None))
        with self.assertRaises(p2p.P2PError) as cm:
            w.status('never-seen')
        self.assertEqual(cm.exception.code, 'REM_ID')
        self.assertEqual(pump.will('RID:w-watcher', 'pump died'), 'WILL_SET')
        t0 = int(time.time())
        pump.close(goodbye=False)  # not a goodbye: the will fires
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', False))
        self.assertEqual(w.recv(5), 'pump died')
        st = w.status('w-pump')
        self.assertFalse(st.online)
        self.assertTrue(t0 - 2 <= st.last_seen <= time.time() + 2, st)
        pump = self.dev('w-pump')
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', True))
        pump.will('RID:w-watcher', 'x')
        self.assertEqual(pump.clear_will(), 'WILL_CLEARED')
        pump.close(goodbye=False)
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', False))
        pump = self.dev('w-pump')
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', True))
        pump.will('RID:w-watcher', 'y')
        pump.close()  # REMID: a goodbye, no will
        self.assertEqual(w.next_presence(5), p2p.Presence('W-PUMP', False))
        self.assertEqual(w.unwatch('RID:w-pump'), 'UNWATCHED')
        self.dev('w-pump')
        time.sleep(0.3)
        self.assertEqual(w.pending_pushes(), [])
        with self.assertRaises(p2p.ReplyTimeout):
            w.next_presence(0.2)

    def test_time_formats(self):
        a = self.dev('t-a')
        legacy = a.time('+05:30')
        self.assertIsInstance(legacy, p2p.LegacyTime)
        self.assertEqual(legacy.zone, 'IST')
        self.assertIn(legacy.weekday, ('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'))
        self.assertRegex(legacy.raw, r'^IST:\(\w{3}\)\(\d{1,2},\d\d,\d{4}\)\(\d\d:\d\d:\d\d\)\(\d+\)$')
        self.assertLess(abs(legacy.unix - time.time()), 5)
        self.assertLess(abs(a.time('Asia/Kolkata', 'EPOCH') - time.time()), 5)
        self.assertRegex(a.time('+05:30', 'ISO'), r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$')
        self.assertLess(abs(a.epoch() - time.time()), 5)
        self.assertLess(abs(a.time('Asia/Kolkata', 'EPOCHMS') / 1000 - time.time()), 5)

    def test_retdata(self):
        a = self.dev('r-a')
        self.dev('r-b')
        for i in range(3):
            a.push('r-b', f'v{i}')
        self.assertEqual(a.retdata(1), 'v0')
        with self.assertRaises(p2p.P2PError) as cm:
            a.retdata(9)
        self.assertEqual(cm.exception.code, 'NO_DATA')
        self.assertEqual(a.retdata_all(), ['v0', 'v1', 'v2'])
        with self.assertRaises(p2p.BadArgument):
            a.retdata(0)

    # -------------------------------------------------------------- secure sessions and TLS

    def test_secure_modes(self):
        b = self.dev('sec-b')
        for mode in ('STCP', 'DSTCP', 'HSTCP'):
            s = self.dev(f'sec-{mode}', secure=mode, uid=self.email)
            self.assertEqual(s.secure, mode)
            self.assertEqual(s.push('sec-b', f'via {mode}'), 'DATA_SENT')
            self.assertEqual(b.recv(5), f'via {mode}')
            self.assertEqual(s.push_friends(f'all {mode}'), 'ALL_1')
            self.assertEqual(b.recv(5), f'all {mode}')
            with self.assertRaises(p2p.P2PError) as cm:
                s.push_parent('x')  # a failure after the KEY check (HSTCP's n advances)
            self.assertEqual(cm.exception.code, 'NO_PARENT')
            with self.assertRaises(p2p.P2PError) as cm:
                s.command('BOGUS')  # refused before the KEY check (n does not advance)
            self.assertEqual(cm.exception.code, 'INVALID_CMD')
            self.assertLess(abs(s.time('+00:00', 'EPOCH') - time.time()), 5)
            self.assertEqual(s.gid(), f'SEC-{mode}')
            self.assertEqual(s.deactivate(), f'{mode}_DEACTIVATED')
            self.assertEqual(s.gid(), f'SEC-{mode}')  # plain KEY again
            s.activate(mode)
            self.assertEqual(s.push('sec-b', 'again'), 'DATA_SENT')
            self.assertEqual(b.recv(5), 'again')
            s.close()

    def test_hstcp_before_registration_and_after_a_reconnect(self):
        s = self.dev(None, secure='HSTCP', uid=self.email, backoff=(0.05, 0.5))
        with self.assertRaises(p2p.P2PError) as cm:
            s.gid()
        self.assertEqual(cm.exception.code, 'NOID')
        self.assertEqual(s.register('hs-a'), 'HS-A')
        b = self.dev('hs-b')
        s.drop()
        wait_until(lambda: s.connections == 2 and s.connected, 5, 'the reconnect')
        self.assertEqual(s.push('hs-b', 'after reconnect'), 'DATA_SENT')
        self.assertEqual(b.recv(5), 'after reconnect')

    def test_hstcp_survives_refused_lines(self):
        s = self.dev('hs-long', secure='HSTCP', uid=self.email)
        self.dev('hs-peer')
        with self.assertRaises(p2p.P2PError) as cm:
            s.push('hs-peer', 'x' * 5000)  # longer than NODE.MAX_LINE: refused unparsed, n unused
        self.assertEqual(cm.exception.code, 'LINE_TOO_LONG')
        with self.assertRaises(p2p.P2PError) as cm:
            s.command('PUSH', 'RID:HS-PEER')  # missing data: refused before the MAC check
        self.assertEqual(cm.exception.code, 'INVALID_FORMAT')
        with self.assertRaises(p2p.P2PError) as cm:
            s.email('nobody', 'subject', 'body')  # a failure after the MAC check: n used
        self.assertIn(cm.exception.code, ('INVALID_ID', 'MAIL_DISABLED'))
        self.assertEqual(s.push('hs-peer', 'still in step'), 'DATA_SENT')

    def test_reconnecting_gives_up_on_a_reset_key(self):
        d = self.dev('kr-dev', backoff=(0.05, 0.2))
        new_key = self.op.call('POST', '/api/v1/accounts/me/key')['key']
        self.assertNotEqual(new_key, self.key)
        with self.assertLogs('p2pcluster', 'WARNING') as logs:
            d.drop()
            wait_until(lambda: d.last_error is not None, 5, 'the client to give up')
        self.assertIn('giving up reconnecting: [FAIL:INVALID_KEY]', '\n'.join(logs.output))
        self.assertEqual(d.last_error.code, 'INVALID_KEY')
        self.assertFalse(d.connected)
        with self.assertRaises(p2p.DisconnectedError) as cm:
            d.gid()
        self.assertEqual(cm.exception.code, 'CLOSED')
        self.key = new_key

    def test_wrong_key_fails_the_server_proof(self):
        wrong = '0' * 32
        with self.assertRaises(p2p.ServerProofError):
            p2p.Client(HOST, PORT, wrong, secure='HSTCP', uid=self.email, reconnect=False)

    @unittest.skipUnless(TLS_PORT and TLS_CA, 'no TLS listener given')
    def test_tls(self):
        import ssl

        ctx = ssl.create_default_context(cafile=TLS_CA)
        t = p2p.Client(HOST, TLS_PORT, self.key, 'tls-a', tls=ctx, server_hostname='localhost')
        self.clients.append(t)
        plain = self.dev('tls-b')
        self.assertEqual(t.push('tls-b', 'over tls'), 'DATA_SENT')
        self.assertEqual(plain.recv(5), 'over tls')
        self.assertEqual(plain.push('tls-a', 'back'), 'DATA_SENT')
        self.assertEqual(t.recv(5), 'back')
        h = p2p.Client(HOST, TLS_PORT, self.key, 'tls-h', tls=ctx, server_hostname='localhost', secure='HSTCP', uid=self.email)
        self.clients.append(h)
        self.assertEqual(h.push('tls-b', 'hstcp in tls'), 'DATA_SENT')
        self.assertEqual(plain.recv(5), 'hstcp in tls')
        w = t.open_raw('tls-b')
        r = plain.accept_raw(5)
        blob = os.urandom(300_000)
        threading.Thread(target=lambda: w.write(blob), daemon=True).start()
        self.assertEqual(r.read_exactly(len(blob), 10), blob)

    # -------------------------------------------------------------- RAW

    def test_raw_stream_with_sha256_then_both_sides_speak_lines_again(self):
        a = self.dev('raw-a')
        b = self.dev('raw-b')
        size = 3 * 1024 * 1024 + 7
        blob = hashlib.sha256(b'seed').digest() * (size // 32 + 1)
        blob = blob[:size]
        self.assertEqual(a.push('raw-b', f'STREAM:{size}'), 'DATA_SENT')
        self.assertEqual(b.recv(5), f'STREAM:{size}')
        w = a.open_raw('raw-b')
        with self.assertRaises(p2p.RawActiveError) as cm:
            a.gid()  # a RAW writer takes no commands
        self.assertEqual(cm.exception.code, 'RAW_ACTIVE')
        done = threading.Event()

        def send():
            for i in range(0, size, 100_000):
                w.write(blob[i : i + 100_000])
            w.close()  # ends the link by reconnecting
            done.set()

        threading.Thread(target=send, daemon=True).start()
        r = b.accept_raw(5)
        h = hashlib.sha256()
        for chunk in r.chunks(size, timeout=20):
            h.update(chunk)
        self.assertEqual(h.hexdigest(), hashlib.sha256(blob).hexdigest())
        self.assertTrue(done.wait(10))
        r.finish()
        self.assertEqual(a.connections, 2)
        self.assertEqual(a.id, 'RAW-A')
        self.assertEqual(a.push('raw-b', 'lines again'), 'DATA_SENT')
        self.assertEqual(b.recv(5), 'lines again')
        self.assertEqual(b.push('raw-a', 'and back'), 'DATA_SENT')
        self.assertEqual(a.recv(5), 'and back')

    def test_raw_full_duplex(self):
        a = self.dev('dx-a')
        b = self.dev('dx-b')
        result = {}

        def starter():
            w = a.open_raw('dx-b', duplex=True, timeout=10)  # returns once B linked back
            w.write(b'ping from A ' * 1000)
            result['a_got'] = w.reader.read_exactly(len(b'pong from B ') * 1000, 10)

        t = threading.Thread(target=starter)
        t.start()
        r = b.accept_raw(5)
        w = b.open_raw('dx-a')  # its [OK:LINK_SYNC] arrives inside A's stream
        self.assertIs(w.reader, r)
        self.assertEqual(r.read_exactly(len(b'ping from A ') * 1000, 10), b'ping from A ' * 1000)
        w.write(b'pong from B ' * 1000)
        t.join(10)
        self.assertEqual(result['a_got'], b'pong from B ' * 1000)
        with self.assertRaises(p2p.RawActiveError):
            b.gid()

    def test_raw_writer_learns_that_the_reader_left(self):
        a = self.dev('rl-a', backoff=(0.05, 0.5))
        b = self.dev('rl-b', reconnect=False)
        with self.assertRaises(p2p.P2PError) as cm:
            a.open_raw('rl-nobody')
        self.assertEqual(cm.exception.code, 'REM_ID')
        self.assertEqual(a.gid(), 'RL-A')  # still a command connection
        w = a.open_raw('rl-b')
        r = b.accept_raw(5)
        w.write(b'x' * 1000)
        self.assertEqual(r.read_exactly(1000, 5), b'x' * 1000)
        b.close(goodbye=False)
        with self.assertRaises(p2p.P2PError) as cm:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                w.write(b'y' * 1000)
                time.sleep(0.02)
        self.assertIn(cm.exception.code, ('REM_LINK', 'CONNECTION_LOST', 'CLOSED'))
        wait_until(lambda: a.connections == 2 and a.connected, 5, 'the writer to reconnect')
        self.assertEqual(a.gid(), 'RL-A')

    # -------------------------------------------------------------- reconnect

    def test_reconnect_restores_id_watches_and_will(self):
        events = []
        w = self.dev('rc-watch')
        w.watch('RID:rc-dev')
        d = self.dev('rc-dev', backoff=(0.05, 0.5), on_reconnect=lambda c: events.append('reconnected'))
        self.assertEqual(w.next_presence(5), p2p.Presence('RC-DEV', True))
        d.watch('RID:rc-other')
        d.will('RID:rc-watch', 'rc-dev lost')
        d.drop()  # as a network failure: the will fires, the client reconnects
        self.assertEqual(w.next_presence(5), p2p.Presence('RC-DEV', False))
        self.assertEqual(w.recv(5), 'rc-dev lost')
        self.assertEqual(w.next_presence(5), p2p.Presence('RC-DEV', True))
        wait_until(lambda: events == ['reconnected'], 5, 'on_reconnect')
        self.assertEqual((d.id, d.connections), ('RC-DEV', 2))
        self.dev('rc-other')
        self.assertEqual(d.next_presence(5), p2p.Presence('RC-OTHER', True))  # the watch was restored
        d.drop()  # the will was restored too
        self.assertEqual(w.next_presence(5), p2p.Presence('RC-DEV', False))
        self.assertEqual(w.recv(5), 'rc-dev lost')
        wait_until(lambda: d.connections == 3 and d.connected, 5, 'the second reconnect')
        self.assertEqual(w.push('rc-dev', 'welcome back'), 'DATA_SENT')
        self.assertEqual(d.recv(5), 'welcome back')

    def test_no_reconnect_and_closed_clients_raise_disconnected(self):
        a = self.dev('nr-a', reconnect=False)
        a.drop()
        wait_until(lambda: not a.connected, 5, 'the drop')
        with self.assertRaises(p2p.DisconnectedError) as cm:
            a.gid()
        self.assertEqual(cm.exception.code, 'CLOSED')
        b = self.dev('nr-b')
        b.close()
        with self.assertRaises(p2p.DisconnectedError):
            b.gid()
        time.sleep(0.3)
        self.assertEqual(b.connections, 1)


if __name__ == '__main__':
    unittest.main(verbosity=2)
