"""A second occupant of the chat room, for the NixOS VM test.

    room-client listen LOGFILE
        Join the room and append every message and presence to LOGFILE, one
        JSON object a line, until stopped.
    room-client say TEXT
        Join the room under another nick, say TEXT, wait until the room
        echoes it back (so it was delivered), leave.

The account comes from the environment: ROOM_CLIENT_JID, ROOM_CLIENT_PASSWORD,
ROOM_CLIENT_ROOM, ROOM_CLIENT_NICK (default "alice") and ROOM_CLIENT_SERVER
(host[:port], default the JID's domain, port 5222).
"""

import asyncio
import json
import os
import sys

import slixmpp


class RoomClient(slixmpp.ClientXMPP):
    def __init__(self, jid, password, room, nick, on_joined=None, logfile=None):
        super().__init__(jid, password)
        self.room = room
        self.nick = nick
        self.on_joined = on_joined
        self.logfile = logfile
        self.done = self.loop.create_future()
        self.joined = False
        self.said = None
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0199")
        # msg["delay"] below: older slixmpp does not load XEP-0203 with MUC.
        self.register_plugin("xep_0203")
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("groupchat_message", self.on_groupchat_message)
        self.add_event_handler("muc::%s::presence" % room, self.on_muc_presence)

    def finish(self, result):
        if not self.done.done():
            self.done.set_result(result)

    def log(self, record):
        if self.logfile is not None:
            with open(self.logfile, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(json.dumps(record, ensure_ascii=False), flush=True)

    async def on_session_start(self, _event):
        self.send_presence()
        await self.get_roster()
        # No history for "say": only what happens from now on counts.
        history = "20" if self.logfile is not None else "0"
        self.plugin["xep_0045"].join_muc(self.room, self.nick, maxhistory=history)

    def on_failed_auth(self, _event):
        print("authentication failed", file=sys.stderr, flush=True)
        self.finish(2)

    def on_disconnected(self, _event):
        self.finish(1)

    def on_muc_presence(self, presence):
        nick = presence["muc"]["nick"]
        kind = "unavailable" if presence["type"] == "unavailable" else "available"
        self.log({"event": "presence", "nick": nick, "type": kind})
        if nick == self.nick and kind == "available" and not self.joined:
            self.joined = True
            if self.on_joined is not None:
                self.on_joined(self)

    def on_groupchat_message(self, msg):
        if msg["mucroom"] != self.room:
            return
        record = {"event": "message", "nick": msg["mucnick"], "body": msg["body"]}
        if msg["delay"]["stamp"] is not None:
            record["delayed"] = True
        self.log(record)
        if self.said is not None and msg["mucnick"] == self.nick and msg["body"] == self.said:
            self.finish(0)


def connect(client, server):
    host, _, port = server.rpartition(":") if ":" in server else (server, "", "5222")
    # slixmpp 1.9 and later take host and port; older ones an address tuple.
    try:
        client.connect(host=host, port=int(port))
    except TypeError:
        client.connect((host, int(port)))


def main(argv):
    if len(argv) != 3 or argv[1] not in ("listen", "say"):
        print(__doc__, file=sys.stderr)
        return 64
    mode, arg = argv[1], argv[2]
    jid = os.environ["ROOM_CLIENT_JID"]
    password = os.environ["ROOM_CLIENT_PASSWORD"]
    room = os.environ["ROOM_CLIENT_ROOM"]
    nick = os.environ.get("ROOM_CLIENT_NICK", "alice")
    server = os.environ.get("ROOM_CLIENT_SERVER", jid.split("@", 1)[-1].split("/", 1)[0])

    asyncio.set_event_loop(asyncio.new_event_loop())
    if mode == "listen":
        client = RoomClient(jid + "/listen", password, room, nick, logfile=arg)
        timeout = None
    else:

        def say(c):
            c.said = arg
            c.send_message(mto=room, mbody=arg, mtype="groupchat")

        client = RoomClient(jid + "/say", password, room, nick + "-says", on_joined=say)
        timeout = 90

    connect(client, server)
    try:
        result = client.loop.run_until_complete(asyncio.wait_for(client.done, timeout))
    except asyncio.TimeoutError:
        print("timed out", file=sys.stderr, flush=True)
        result = 1
    if mode == "say":
        client.disconnect()
        client.loop.run_until_complete(asyncio.sleep(1))
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv))
