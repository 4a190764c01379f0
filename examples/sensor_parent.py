#!/usr/bin/env python3
"""Sensors reporting to their PARENT in the device tree (PROTOCOL.md §5, §5a).

The operator builds the tree through the REST API: hub HUB-A with sensors THERMO-1 and THERMO-2 under it, and a
second hub HUB-B. Sensors push readings to PARENT without knowing their hub's ID; the hub configures all of them
at once with CHILDS, watches them (WATCH CHILDS) and gets each sensor's last will when it dies. When the operator
moves a sensor to the other hub, its next PARENT push goes there — no reconnect, no change on the device.

    sensor_parent.py            # runs the story (env P2PC_KEY, P2PC_PORT, P2PC_HTTP_PORT; or --key ...)
"""

import sys

from common import device, ensure_node, operator, parse, parser, say

READINGS = {'THERMO-1': ['21.5', '21.7', '21.6'], 'THERMO-2': ['19.0', '19.4', '19.8']}


def main(argv=None):
    p = parser('Sensors pushing to their PARENT.')
    p.add_argument('--suffix', default='', help='appended to every ID (to run demos side by side)')
    args = parse(p, argv)
    s = args.suffix
    hub_a, hub_b = 'HUB-A' + s, 'HUB-B' + s
    names = {f'THERMO-1{s}': 'THERMO-1', f'THERMO-2{s}': 'THERMO-2'}

    op = operator(args)
    ensure_node(op, hub_a)
    ensure_node(op, hub_b)
    for sensor_id in names:
        ensure_node(op, sensor_id, hub_a)
    say(f'operator: tree {hub_a} -> {", ".join(names)}; {hub_b}')

    hub = device(args, hub_a)
    other_hub = device(args, hub_b)
    say(f'{hub.id}: {hub.watch("CHILDS")} CHILDS')

    sensors = {}
    for sensor_id in names:
        sensor = device(args, sensor_id)
        sensor.will('PARENT', f'{sensor.id}:LOST')  # pushed by the server if the connection dies
        sensors[sensor_id] = sensor
        say(f'{sensor.id}: online, last will set')
        event = hub.next_presence(5)
        say(f'{hub.id}: {event.id} is {"ONLINE" if event.online else "OFFLINE"}')

    say(f'{hub.id}: interval=10 -> CHILDS [OK:{hub.push_childs("interval=10")}]')
    for sensor_id, sensor in sensors.items():
        say(f'{sensor_id}: config {sensor.recv(5)}')

    temps = []
    for i in range(3):
        for sensor_id, sensor in sensors.items():
            value = READINGS[names[sensor_id]][i]
            reply = sensor.push_parent(f'{sensor_id}:temp={value}')
            say(f'{sensor_id}: temp={value} -> PARENT [OK:{reply}]')
            sender, _, reading = hub.recv(5).partition(':')
            temps.append(float(reading.split('=')[1]))
            say(f'{hub.id}: {sender} {reading}')
    say(f'{hub.id}: average {sum(temps) / len(temps):.2f} C over {len(temps)} readings')

    # THERMO-2's battery dies: no goodbye (REMID), so its will fires and the hub's watch reports it.
    dead_id = list(sensors)[1]
    sensors.pop(dead_id).close(goodbye=False)
    say(f'{dead_id}: battery dead (connection lost)')
    event = hub.next_presence(5)
    say(f'{hub.id}: {event.id} is {"ONLINE" if event.online else "OFFLINE"}')
    say(f'{hub.id}: last will {hub.recv(5)}')
    st = hub.status(dead_id)
    say(f'{hub.id}: STATUS {dead_id} -> {"ONLINE" if st.online else "OFFLINE"}')

    # The operator moves THERMO-1 under HUB-B: its next PARENT push goes there.
    moved_id, moved = next(iter(sensors.items()))
    op.move_node(moved_id, hub_b)
    say(f'operator: {moved_id} moved under {hub_b}')
    say(f'{moved_id}: temp=22.0 -> PARENT [OK:{moved.push_parent(f"{moved_id}:temp=22.0")}]')
    say(f'{other_hub.id}: {other_hub.recv(5)}')
    moved.close(goodbye=False)
    say(f'{moved_id}: connection lost')
    say(f'{other_hub.id}: last will {other_hub.recv(5)}')

    hub.close()
    other_hub.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
