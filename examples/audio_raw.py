#!/usr/bin/env python3
"""Streaming audio over the RAW channel (PROTOCOL.md §7).

A player streams a WAV file to a speaker. It first announces the stream with an ordinary push
(`STREAM:<player>:<bytes>:<sha256>`), then opens the RAW link (`TCP:PUSH:<KEY>:RAW:<SPEAKER>` -> `[OK:LINK_SYNC]`;
the speaker gets `PUSHRAW:`) and writes the file's bytes, which the server relays unparsed, in order and with
backpressure. The speaker reads exactly that many bytes, checks the SHA-256, saves the file and confirms with a
push; the player then ends the link by closing its connection (the client reconnects and registers again).

    audio_raw.py tone --out tone.wav                   # writes the test tone (3 s, 44.1 kHz, 16-bit stereo)
    audio_raw.py speaker --id SPEAKER --out got.wav    # waits for one stream (--count N, 0 = forever)
    audio_raw.py player --id PLAYER --to SPEAKER --wav tone.wav [--realtime]
    audio_raw.py demo                                  # both in one process, with a generated tone
"""

import hashlib
import math
import os
import sys
import tempfile
import threading
import wave
from array import array

from common import device, p2pcluster, parse, parser, say

RATE = 44100


def make_tone(path, seconds=3.0):
    """A three-note chime (C5, E5, G5), 16-bit stereo; the same bytes on every run."""
    frames = int(RATE * seconds)
    notes = [523.25, 659.25, 783.99]
    per_note = frames // len(notes)
    samples = array('h')
    for i in range(frames):
        n = min(i // per_note, len(notes) - 1)
        t = (i - n * per_note) / RATE
        envelope = math.exp(-3.0 * t)
        v = int(round(12000 * envelope * math.sin(2 * math.pi * notes[n] * t)))
        samples.append(v)  # left
        samples.append(v // 2)  # right, softer
    if sys.byteorder == 'big':
        samples.byteswap()
    with wave.open(path, 'wb') as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return path


def describe(path):
    with wave.open(path, 'rb') as w:
        secs = w.getnframes() / w.getframerate()
        kind = 'stereo' if w.getnchannels() == 2 else 'mono'
        return f'{secs:.2f} s, {w.getframerate()} Hz, {8 * w.getsampwidth()}-bit {kind}'


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(65536), b''):
            h.update(b)
    return h.hexdigest()


class Speaker:
    """Receives announced RAW streams, checks them and confirms to the sender."""

    def __init__(self, args, speaker_id, out):
        self.out = out
        self.client = device(args, speaker_id)

    def receive_one(self, timeout=None):
        announce = self.client.recv(timeout)
        kind, sender, size, digest = (announce.split(':') + ['', '', '', ''])[:4]
        if kind != 'STREAM':
            say(f'{self.client.id}: ignoring {announce!r}')
            return False
        size = int(size)
        reader = self.client.accept_raw(10)  # PUSHRAW: arrived, the bytes follow
        h = hashlib.sha256()
        with open(self.out, 'wb') as f:
            for chunk in reader.chunks(size, timeout=30):
                h.update(chunk)
                f.write(chunk)
        reader.finish()  # the stream is over: lines (pushes, replies) again
        ok = h.hexdigest() == digest
        say(
            f'{self.client.id}: received {size} bytes from {sender}, '
            f'sha256 {"OK" if ok else "MISMATCH " + h.hexdigest()}, saved to {os.path.basename(self.out)}'
        )
        self.client.push(sender, f'GOT:{size}:{h.hexdigest()}')
        return ok

    def close(self):
        self.client.close()


def play(args, player, target, path, realtime=False):
    """Announces and streams the file; returns the exit status."""
    size = os.path.getsize(path)
    digest = sha256_file(path)
    say(f'{player.id}: streaming {os.path.basename(path)} ({describe(path)}, {size} bytes) to {target.upper()}')
    try:
        player.push(target, f'STREAM:{player.id}:{size}:{digest}')
        link = player.open_raw(target)
    except p2pcluster.P2PError as e:
        say(f'{player.id}: [FAIL:{e.code}] (is {target.upper()} online?)')
        return 1
    with open(path, 'rb') as f:
        link.write_file(f, pace=(RATE * 4) if realtime else None)  # 4 bytes per stereo 16-bit frame
    answer = player.recv(timeout=30)  # pushes still arrive while this connection writes the stream
    link.close()  # ends the RAW link; the client reconnects and registers again
    ok = answer == f'GOT:{size}:{digest}'
    say(f'{player.id}: {target.upper()} confirmed {size} bytes, sha256 {"matches" if ok else "DIFFERS: " + answer}')
    return 0 if ok else 1


def main(argv=None):
    p = parser('Streaming audio over the RAW channel.')
    sub = p.add_subparsers(dest='role')
    d = sub.add_parser('demo', help='speaker and player in one process (default)')
    d.add_argument('--suffix', default='', help='appended to both IDs')
    d.add_argument('--out', default=None, help='where the speaker saves the stream (default: a temp dir)')
    d.add_argument('--tone', default=None, help='where to write the generated tone (default: a temp dir)')
    t = sub.add_parser('tone', help='write the test tone')
    t.add_argument('--out', default='tone.wav')
    t.add_argument('--seconds', type=float, default=3.0)
    s = sub.add_parser('speaker', help='receive streams')
    s.add_argument('--id', default='SPEAKER')
    s.add_argument('--out', default='received.wav')
    s.add_argument('--count', type=int, default=1, help='streams to receive (0 = forever)')
    pl = sub.add_parser('player', help='stream a WAV file')
    pl.add_argument('--id', default='PLAYER')
    pl.add_argument('--to', default='SPEAKER')
    pl.add_argument('--wav', default=None, help='the file (default: the generated tone)')
    pl.add_argument('--realtime', action='store_true', help='send at the audio rate instead of at once')
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == 'tone':  # no server needed
        a = p.parse_args(argv)
        make_tone(a.out, a.seconds)
        say(f'{a.out}: {describe(a.out)}, {os.path.getsize(a.out)} bytes, sha256 {sha256_file(a.out)}')
        return 0
    args = parse(p, argv)
    with tempfile.TemporaryDirectory(prefix='p2pc-audio-') as tmp:
        return run(args, tmp)


def run(args, tmp):
    if args.role == 'speaker':
        speaker = Speaker(args, args.id, args.out)
        say(f'{speaker.client.id}: online, waiting for a stream')
        n, status = 0, 0
        try:
            while args.count == 0 or n < args.count:
                status |= 0 if speaker.receive_one() else 1
                n += 1
        except KeyboardInterrupt:
            pass
        speaker.close()
        return status

    if args.role == 'player':
        wav = args.wav or make_tone(os.path.join(tmp, 'tone.wav'))
        player = device(args, args.id)
        try:
            return play(args, player, args.to, wav, args.realtime)
        finally:
            player.close()

    # demo
    suffix = getattr(args, 'suffix', '')
    tone = make_tone(getattr(args, 'tone', None) or os.path.join(tmp, 'tone.wav'))
    out = getattr(args, 'out', None) or os.path.join(tmp, 'received.wav')
    speaker = Speaker(args, 'SPEAKER' + suffix, out)
    player = device(args, 'PLAYER' + suffix)
    results = []
    listener = threading.Thread(target=lambda: results.append(speaker.receive_one(30)))
    listener.start()
    status = play(args, player, speaker.client.id, tone)
    listener.join(30)
    player.close()
    speaker.close()
    same = sha256_file(tone) == sha256_file(out)
    say(f'{os.path.basename(out)} {"is identical to" if same else "DIFFERS from"} {os.path.basename(tone)}')
    return 0 if status == 0 and results == [True] and same else 1


if __name__ == '__main__':
    sys.exit(main())
