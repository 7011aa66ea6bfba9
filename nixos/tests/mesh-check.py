"""Answers the VM test's questions about the mesh side, from what was seen on
the bridge's embedded MQTT broker and in the chat room.

BUSLOG is the output of
    mosquitto_sub -t 'msh/#' -t 'sovereign/#' -F '%t %x'
(one message a line: the topic, a space, the payload in hex). ROOMLOG is the
log of "room-client listen" (JSON lines).

    mesh-check mesh-text-in-room BUSLOG ROOMLOG
        Exit 0 if a text the radio heard from the mesh (sovereign/mesh/rx,
        or the Meshtastic JSON uplink) was posted to the room by someone
        other than the test's own occupant.
    mesh-check radio-took TEXT BUSLOG
        Exit 0 if a send request carrying TEXT (sovereign/mesh/tx, or
        sovereign/mesh/tx/<gateway id> for one radio) was taken by the
        radio: a result on sovereign/mesh/result for the same request id
        with no error.
    mesh-check in-room NICK ROOMLOG
        Exit 0 if NICK is in the room (its last presence is "available").

Exit 1 means "not (yet)"; the test retries.
"""

import json
import sys

TEXT_MESSAGE_APP = 1


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """Decodes one protobuf message into {field number: [values]}."""
    out = {}
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = bytes(buf[i : i + n]), i + n
        elif wire == 5:
            value, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        out.setdefault(num, []).append(value)
    return out


def first(f, num, default=None):
    return f.get(num, [default])[0]


def decoded_packet(envelope):
    """ServiceEnvelope bytes -> (packet id, Data fields) or None if encrypted."""
    packet = fields(first(fields(envelope), 1, b""))  # ServiceEnvelope.packet
    data = first(packet, 4)  # MeshPacket.decoded
    if data is None:
        return None
    return first(packet, 6, 0), fields(data)  # MeshPacket.id


def bus(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        topic, _, payload = line.strip().partition(" ")
        if not topic:
            continue
        try:
            yield topic, bytes.fromhex(payload)
        except ValueError:
            continue  # a line cut short while being written


def mesh_texts(buslog):
    texts = set()
    for topic, payload in bus(buslog):
        try:
            if topic == "sovereign/mesh/rx":
                pkt = decoded_packet(payload)
                if pkt and first(pkt[1], 1) == TEXT_MESSAGE_APP:
                    texts.add(first(pkt[1], 2, b"").decode("utf-8", "replace"))
            elif "/2/json/" in topic:
                msg = json.loads(payload)
                if msg.get("type") == "text":
                    p = msg.get("payload")
                    texts.add(p.get("text", "") if isinstance(p, dict) else json.dumps(p))
        except (ValueError, IndexError, AttributeError):
            continue
    texts.discard("")
    return texts


def room_messages(roomlog, own_prefix):
    try:
        with open(roomlog, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("event") == "message" and not r.get("nick", "").startswith(own_prefix):
            out.append(r)
    return out


def mesh_text_in_room(buslog, roomlog, own_prefix="alice"):
    texts = mesh_texts(buslog)
    for r in room_messages(roomlog, own_prefix):
        for t in texts:
            if t in r.get("body", ""):
                print("mesh text %r reached the room as %r from %r" % (t, r["body"], r["nick"]))
                return 0
    print("mesh texts heard so far: %r" % sorted(texts))
    return 1


def radio_took(text, buslog):
    wanted = text.encode("utf-8")
    requests = set()
    results = {}
    for topic, payload in bus(buslog):
        try:
            pkt = decoded_packet(payload)
        except (ValueError, IndexError):
            continue
        if pkt is None:
            continue
        pid, data = pkt
        if topic == "sovereign/mesh/tx" or topic.startswith("sovereign/mesh/tx/"):
            if first(data, 1) == TEXT_MESSAGE_APP and wanted in first(data, 2, b""):
                requests.add(pid)
        elif topic == "sovereign/mesh/result":
            routing = fields(first(data, 2, b""))  # Data.payload: Routing
            results[first(data, 6, 0)] = first(routing, 3, 0)  # request_id -> error_reason
    if not requests:
        print("no send request carrying %r yet" % text)
        return 1
    for rid in requests:
        if rid in results:
            if results[rid] == 0:
                print("the radio took request %d carrying %r" % (rid, text))
                return 0
            print("request %d carrying %r failed: routing error %d" % (rid, text, results[rid]))
            return 1
    print("send request(s) %r carrying %r not answered yet" % (sorted(requests), text))
    return 1


def in_room(nick, roomlog):
    state = None
    try:
        with open(roomlog, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("event") == "presence" and r.get("nick") == nick:
                    state = r.get("type")
    except FileNotFoundError:
        pass
    print("%s: %s" % (nick, state or "never seen"))
    return 0 if state == "available" else 1


def main(argv):
    if len(argv) == 4 and argv[1] == "mesh-text-in-room":
        return mesh_text_in_room(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "radio-took":
        return radio_took(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "in-room":
        return in_room(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
