"""Shared by the examples: where the server is, the KEY, and the client module (clients/python/p2pcluster.py).

Every example takes --host, --port (device port), --http-port (operator API) and --key, with defaults from the
environment: P2PC_HOST (127.0.0.1), P2PC_PORT (8080), P2PC_HTTP_PORT (8081), P2PC_KEY (no default: the KEY the
server printed on its first start, or `npx p2pcluster account add you@example.com`).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'clients', 'python'))

import p2pcluster  # noqa: E402  (the path above first)

__all__ = ['p2pcluster', 'parser', 'parse', 'device', 'operator', 'say', 'ensure_node', 'ensure_router']


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--host', default=os.environ.get('P2PC_HOST', '127.0.0.1'))
    p.add_argument('--port', type=int, default=int(os.environ.get('P2PC_PORT', '8080')))
    p.add_argument('--http-port', type=int, default=int(os.environ.get('P2PC_HTTP_PORT', '8081')))
    p.add_argument('--key', default=os.environ.get('P2PC_KEY', ''))
    return p


def parse(p, argv=None):
    args = p.parse_args(argv)
    if not args.key:
        p.error('no KEY: pass --key or set P2PC_KEY')
    return args


def device(args, device_id, **options):
    """A connected, registered device."""
    return p2pcluster.Client(args.host, args.port, args.key, device_id, **options)


def operator(args):
    """The operator REST API, authenticated with the account KEY (as `Authorization: Bearer <KEY>`)."""
    return p2pcluster.Operator(f'http://{args.host}:{args.http_port}', args.key)


def say(*parts):
    """One line of output, flushed at once (the examples run as subprocesses in CI)."""
    print(*parts, flush=True)


def ensure_node(op, node_id, parent=None):
    """Puts node_id in the tree under parent (None: a root), whether or not an earlier run left it there."""
    try:
        op.add_node(node_id, parent)
    except p2pcluster.OperatorError as e:
        if e.code != 'NODE_EXISTS':
            raise
        op.move_node(node_id, parent)


def ensure_router(op, name, members):
    """Makes router `name` with exactly these members, whatever an earlier run left."""
    try:
        op.add_router(name)
        current = []
    except p2pcluster.OperatorError as e:
        if e.code != 'ROUTER_EXISTS':
            raise
        current = op.router(name)['members']
    wanted = [m.upper() for m in members]
    for m in current:
        if m not in wanted:
            op.remove_member(name, m)
    for m in wanted:
        if m not in current:
            op.add_member(name, m)
