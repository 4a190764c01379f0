#!/usr/bin/env python3
"""Garden lights on a mesh router (RO, PROTOCOL.md §5).

A router is a named group: a push to RO:<ROUTER> reaches every other member, and only members may push to it.
The operator makes router GARDEN with a motion sensor and three lights (REST API); the house hub watches the
garden (WATCH RO:GARDEN, §5a), sees a broken light go offline, and is let into the router by the operator to
switch everything off — live, with no reconnect.

    garden_lights.py            # runs the story (env P2PC_KEY, P2PC_PORT, P2PC_HTTP_PORT; or --key ...)
"""

import sys

from common import device, ensure_router, operator, p2pcluster, parse, parser, say


def main(argv=None):
    p = parser('Garden lights on a mesh router (RO).')
    p.add_argument('--suffix', default='', help='appended to every ID and name (to run demos side by side)')
    args = parse(p, argv)
    s = args.suffix
    garden = 'GARDEN' + s
    lights = [f'LIGHT-{i}{s}' for i in (1, 2, 3)]
    motion_id, house_id = 'MOTION' + s, 'HOUSE' + s

    op = operator(args)
    ensure_router(op, garden, [motion_id] + lights)
    members = op.router(garden)['members']
    say(f'operator: router {garden} = {", ".join(members)}')

    house = device(args, house_id)
    say(f'{house.id}: {house.watch("RO:" + garden)} RO:{garden}')
    on = {}
    for light_id in lights:
        on[light_id] = device(args, light_id)
        assert house.next_presence(5) == p2pcluster.Presence(light_id, True)
    motion = device(args, motion_id)
    assert house.next_presence(5) == p2pcluster.Presence(motion_id, True)
    say(f'{house.id}: {len(on) + 1} garden devices online')

    def movement(where):
        reply = motion.push_router(garden, f'motion:{where}')
        say(f'{motion.id}: motion at the {where} -> RO:{garden} [OK:{reply}]')
        for light_id, light in sorted(on.items()):
            say(f'{light_id}: {light.recv(5)} -> light on for 60 s')

    movement('gate')

    # A bulb breaks: its connection drops. The house sees it through its watch.
    broken = lights[1]
    on.pop(broken).close(goodbye=False)
    event = house.next_presence(5)
    say(f'{house.id}: {event.id} went {"ONLINE" if event.online else "OFFLINE"}')
    movement('pond')  # [OK:2/3]: two of the three other members got it

    # The house is not a member: the router refuses it until the operator adds it.
    try:
        house.push_router(garden, 'all off')
    except p2pcluster.P2PError as e:
        say(f'{house.id}: all off -> RO:{garden} [FAIL:{e.code}] (not a member)')
    op.add_member(garden, house_id)
    say(f'operator: {house_id} added to {garden}')
    reply = house.push_router(garden, 'all off')
    say(f'{house.id}: all off -> RO:{garden} [OK:{reply}]')
    for light_id, light in sorted(on.items()):
        say(f'{light_id}: {light.recv(5)}')
    say(f'{motion.id}: {motion.recv(5)}')

    # The bulb is replaced.
    on[broken] = device(args, broken)
    event = house.next_presence(5)
    say(f'{house.id}: {event.id} went {"ONLINE" if event.online else "OFFLINE"}')

    for c in [house, motion, *on.values()]:
        c.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
