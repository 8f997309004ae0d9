#!/usr/bin/env python3
"""An application on a device, using the PNE's local API (CPNS-5) as docs/control-api.md
describes it and nothing else: one JSON object per line on the PNE's Unix socket.

It says hello, lists the PNs the PNE is a member of, follows the PNE's events, accepts the
invitations the PNE holds for it (a PNE run with `--invitations ask`), and once the PNE joined
a PN lists its PNs again and ends.

    python3 examples/pne_app.py --socket phone.db.sock [--decline] [--timeout 60]

Standard library only. Exit status 0 once it saw the PNE join a PN (or, with --decline, once it
declined an invitation); 1 on an error answer or when the time is up.
"""

import argparse
import json
import socket
import sys
import time

VERSION = 1


class Refused(Exception):
    """The PNE answered with an error: its code and reason (docs/control-api.md, "Errors")."""

    def __init__(self, error):
        super().__init__(f"{error['code']}: {error['reason']}")
        self.code = error["code"]


class Connection:
    """One connection to the PNE's socket: requests and their answers, line by line."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("r", encoding="utf-8")

    def send(self, verb, **fields):
        line = json.dumps({"v": VERSION, "verb": verb, **fields}, separators=(",", ":"))
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def line(self):
        text = self.reader.readline()
        if not text:
            raise ConnectionError("the PNE closed the connection")
        value = json.loads(text)
        if value.get("v") != VERSION:
            raise ValueError(f"not a line of version {VERSION}: {text!r}")
        return value

    def answer(self):
        """The answer to the request sent: its fields, or Refused."""
        value = self.line()
        if value.get("ok") is True:
            return value
        if value.get("ok") is False:
            raise Refused(value["error"])
        raise ValueError(f"not an answer: {value!r}")

    def ask(self, verb, **fields):
        self.send(verb, **fields)
        return self.answer()

    def close(self):
        self.reader.close()
        self.sock.close()


def ask(path, timeout, verb, **fields):
    """One request on a connection of its own (an idle connection is closed after 30 s)."""
    conn = Connection(path, timeout)
    try:
        return conn.ask(verb, **fields)
    finally:
        conn.close()


def show_pns(pns):
    if not pns:
        print("no PNs", flush=True)
    for pn in pns:
        print(f"PN {pn['pn_id']} at {pn['gateway']}: {', '.join(pn['members'])}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the PNE's control socket")
    parser.add_argument("--decline", action="store_true", help="decline invitations instead")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after SECS")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    # Who answers: a PNE speaking this version.
    hello = ask(args.socket, args.timeout, "hello")
    if hello["role"] != "pne" or VERSION not in hello["versions"]:
        print(f"not a PNE of version {VERSION}: {hello}", file=sys.stderr)
        return 1
    print(f"PNE {hello['entity']}", flush=True)
    show_pns(ask(args.socket, args.timeout, "show")["pns"])

    # Follow its events on a connection of their own (a stream takes its connection).
    events = Connection(args.socket, max(1.0, deadline - time.monotonic()))
    events.ask("events")
    print("following events", flush=True)
    answered = set()
    while time.monotonic() < deadline:
        try:
            event = events.line()
        except socket.timeout:
            break
        name = event["event"]
        if name == "invited":
            pn_id = event["pn_id"]
            print(f"invited to PN {pn_id} by {event['from']}", flush=True)
            accept = not args.decline
            # The answer goes on another connection, while the events keep coming here.
            result = ask(args.socket, args.timeout, "answer_invitation", pn_id=pn_id, accept=accept)
            answered.add(pn_id)
            print(("accepted" if result["accepted"] else "declined") + f" PN {pn_id}", flush=True)
        elif name == "invitation_declined" and args.decline and event["pn_id"] in answered:
            return 0
        elif name == "pn_joined":
            pn = event["pn"]
            print(f"joined PN {pn['pn_id']}", flush=True)
            show_pns(ask(args.socket, args.timeout, "show")["pns"])
            events.close()
            return 0
        elif name == "completed" and "error" in event:
            print(f"{event['flow']} failed: {event['error']['code']}", flush=True)
    print("time is up", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(1)
