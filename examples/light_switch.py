#!/usr/bin/env python3
"""A light switch and lamps joined by an ALIAS (PROTOCOL.md §5, extension).

The switch does not know which lamp it drives: it pushes to ALIAS:LIGHT. The operator points the alias at a lamp
through the REST API (PUT /api/v1/accounts/me/aliases/LIGHT); re-pointing it takes effect on the next push, with no
change on the devices and no reconnect.

    light_switch.py point --to LAMP-1          # operator: LIGHT -> LAMP-1
    light_switch.py lamp --id LAMP-1           # a lamp (runs until Ctrl-C, or --count presses)
    light_switch.py switch                     # one press: TOGGLE through ALIAS:LIGHT, prints the lamp's answer
    light_switch.py demo                       # the whole story in one process

Lamp and switch talk in plain text: the switch pushes `<SWITCH-ID>:<ON|OFF|TOGGLE>`, the lamp answers the switch
with `<LAMP-ID> is ON|OFF` (RID).
"""

import sys
import threading

from common import device, operator, p2pcluster, parse, parser, say


def point(args, alias, target):
    operator(args).set_alias(alias, target)
    say(f'operator: alias {alias.upper()} -> {target.upper()}')


class Lamp:
    """A lamp: obeys ON/OFF/TOGGLE and tells the sender its new state."""

    def __init__(self, args, lamp_id, count=None):
        self.on = False
        self.count = count
        self.handled = 0
        self.done = threading.Event()
        self.client = device(args, lamp_id, on_push=self.command, autoconnect=False)
        self.client.connect()  # callbacks may run from here on: self.client is set
        say(f'{self.client.id}: online, light OFF')

    def command(self, data):
        sender, _, cmd = data.partition(':')
        cmd = cmd.upper()
        if cmd not in ('ON', 'OFF', 'TOGGLE'):
            say(f'{self.client.id}: ignoring {data!r}')
            return
        self.on = (not self.on) if cmd == 'TOGGLE' else cmd == 'ON'
        state = 'ON' if self.on else 'OFF'
        say(f'{self.client.id}: {sender} says {cmd} -> light {state}')
        try:
            self.client.push(sender, f'{self.client.id} is {state}')
        except p2pcluster.P2PError as e:
            say(f'{self.client.id}: could not answer {sender}: [FAIL:{e.code}]')
        self.handled += 1
        if self.count is not None and self.handled >= self.count:
            self.done.set()

    def close(self):
        self.client.close()


def press(args, switch, alias, cmd):
    """One press: push through the alias, wait for the lamp's answer. Returns the exit status."""
    say(f'{switch.id}: pressed, sending {cmd} to ALIAS:{alias.upper()}')
    try:
        reply = switch.push_alias(alias, f'{switch.id}:{cmd}')
    except p2pcluster.P2PError as e:
        say(f'{switch.id}: [FAIL:{e.code}] (is a lamp online behind {alias.upper()}?)')
        return 1
    try:
        answer = switch.recv(timeout=5)
    except p2pcluster.ReplyTimeout:
        say(f'{switch.id}: {reply}, but no lamp answered')
        return 1
    say(f'{switch.id}: {reply}, {answer}')
    return 0


def demo(args):
    suffix = args.suffix
    l1, l2, sw_id = f'LAMP-1{suffix}', f'LAMP-2{suffix}', f'SWITCH-1{suffix}'
    point(args, 'LIGHT' + suffix, l1)
    lamps = [Lamp(args, l1), Lamp(args, l2)]
    switch = device(args, sw_id)
    status = press(args, switch, 'LIGHT' + suffix, 'TOGGLE')
    point(args, 'LIGHT' + suffix, l2)  # the operator re-points the alias; nothing changes on the devices
    status |= press(args, switch, 'LIGHT' + suffix, 'TOGGLE')
    status |= press(args, switch, 'LIGHT' + suffix, 'TOGGLE')
    point(args, 'LIGHT' + suffix, l1)
    status |= press(args, switch, 'LIGHT' + suffix, 'OFF')
    switch.close()
    for lamp in lamps:
        lamp.close()
    return status


def main(argv=None):
    p = parser('A light switch and lamps joined by an ALIAS.')
    sub = p.add_subparsers(dest='role')
    d = sub.add_parser('demo', help='the whole story in one process (default)')
    d.add_argument('--suffix', default='', help='appended to every ID and name (to run demos side by side)')
    pt = sub.add_parser('point', help='operator: point the alias at a lamp (REST API)')
    pt.add_argument('--alias', default='LIGHT')
    pt.add_argument('--to', required=True)
    lp = sub.add_parser('lamp', help='run a lamp')
    lp.add_argument('--id', default='LAMP-1')
    lp.add_argument('--count', type=int, default=None, help='exit after this many commands')
    sw = sub.add_parser('switch', help='press the switch once')
    sw.add_argument('--id', default='SWITCH-1')
    sw.add_argument('--alias', default='LIGHT')
    sw.add_argument('command', nargs='?', default='TOGGLE', choices=['ON', 'OFF', 'TOGGLE'])
    args = parse(p, argv)
    if args.role in (None, 'demo'):
        if args.role is None:
            args.suffix = ''
        return demo(args)
    if args.role == 'point':
        point(args, args.alias, args.to)
        return 0
    if args.role == 'lamp':
        lamp = Lamp(args, args.id, args.count)
        try:
            lamp.done.wait()
        except KeyboardInterrupt:
            pass
        lamp.close()
        return 0
    switch = device(args, args.id)
    try:
        return press(args, switch, args.alias, args.command)
    finally:
        switch.close()


if __name__ == '__main__':
    sys.exit(main())
