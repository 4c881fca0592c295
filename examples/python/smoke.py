#!/usr/bin/env python3
"""End-to-end check of a running promised server from Python.

Sets up a node and a SKU, feeds stock, then holds, commits, releases and
queries ATP through ``promised_client`` (built only on the flatc-generated
code and the ``flatbuffers`` runtime), checking at each step that the numbers
add up, that retries are idempotent and that errors come back with the
schema's codes. It prints what it did and exits 1 at the first mismatch, so
CI can run it against a real server (``server/tests/python_client.rs``).

Usage::

    python3 examples/python/smoke.py --addr 127.0.0.1:7411 [--token T]

The node and SKU are named after ``--tag`` (random by default), so the script
can run again against the same server: each run makes its own.
"""

import argparse
import secrets
import sys

from promised_client import (Client, HoldLine, PromisedError, ProtocolError,
                             new_id)

ON_HAND = 100
HELD = 3
RELEASED = 5


class Mismatch(Exception):
    """The server answered, but not what the protocol promises."""


def check(what, got, want):
    """Prints a passed check, or raises ``Mismatch`` naming both values."""
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, expected {want!r}")
    print(f"  ok  {what} = {got!r}")


def expect_error(what, name, code, call):
    """Runs ``call`` and checks that it fails with the ``Error`` ``name``
    (``code``); returns the error so its message can be shown."""
    try:
        result = call()
    except PromisedError as e:
        check(f"{what}: error code", (e.code, e.name), (code, name))
        print(f"      message: {e.message}")
        return e
    raise Mismatch(f"{what}: expected the error {name} ({code}), "
                   f"got {result!r}")


def run(addr, token, tag):
    sku, node = f"SKU-{tag}", f"DC-{tag}"
    with Client.connect(addr, token=token,
                        client_name="promised-python-smoke") as c:
        h = c.hello
        print(f"connected to {h.server_name} at {addr}: protocol "
              f"{h.version}, role {h.role}, frames up to "
              f"{h.max_frame_bytes} bytes")
        check("negotiated protocol version", h.version, 1)

        print(f"setup: node {node}, SKU {sku}, {ON_HAND} on hand")
        check("UpsertNode", c.upsert_node(node), node)
        check("UpsertSku", c.upsert_sku(sku), sku)
        feed = new_id()
        check("SetOnHand repeated", c.set_on_hand(node, {sku: ON_HAND}, 1,
                                                  request=feed), False)
        check("SetOnHand retried with the same id: repeated",
              c.set_on_hand(node, {sku: ON_HAND}, 1, request=feed), True)
        check("ATP before any hold", c.atp(sku, node), ON_HAND)

        print(f"hold {HELD} units")
        hold_id = new_id()
        granted = c.hold([HoldLine(sku, node, HELD)], ttl_ms=600_000,
                         hold=hold_id)
        check("hold granted", granted.granted, True)
        check("hold id", granted.hold, hold_id)
        check("units granted", [line.granted for line in granted.lines],
              [HELD])
        check("repeated", granted.repeated, False)
        check("ATP after the hold", c.atp(sku, node), ON_HAND - HELD)
        check("reserved", c.position(sku, node).reserved, HELD)

        print("the same hold again, as a client retrying after a lost reply")
        again = c.hold([HoldLine(sku, node, HELD)], ttl_ms=600_000,
                       hold=hold_id)
        check("repeated", again.repeated, True)
        check("same expiry", again.expires_at_ms, granted.expires_at_ms)
        check("ATP unchanged by the retry", c.atp(sku, node), ON_HAND - HELD)

        value = c.get_hold(hold_id)
        check("GetHold state", value.state, "Held")
        check("GetHold lines", [(line.sku, line.node, line.granted)
                                for line in value.lines], [(sku, node, HELD)])

        print("commit it")
        commit_id = new_id()
        changed = c.commit(hold_id, request=commit_id)
        check("commit state", (changed.changed, changed.state),
              (True, "Committed"))
        check("commit retried: repeated",
              c.commit(hold_id, request=commit_id).repeated, True)
        check("GetHold state", c.get_hold(hold_id).state, "Committed")
        position = c.position(sku, node)
        check("position (on hand, reserved, allocated)",
              (position.on_hand, position.reserved, position.allocated),
              (ON_HAND, 0, HELD))
        check("ATP after the commit", c.atp(sku, node), ON_HAND - HELD)

        print(f"hold {RELEASED} more, then release them")
        second = c.hold([(sku, node, RELEASED)])
        check("second hold granted", second.granted, True)
        check("ATP with both", c.atp(sku, node), ON_HAND - HELD - RELEASED)
        released = c.release(second.hold)
        check("release state", released.state, "Released")
        check("ATP after the release", c.atp(sku, node), ON_HAND - HELD)
        check("network ATP (one node stocks it)", c.network_atp(sku),
              ON_HAND - HELD)

        print("refusals and errors")
        atp = ON_HAND - HELD
        refused = c.hold([HoldLine(sku, node, atp + 1)])
        check("a hold above ATP is refused", refused.granted, False)
        check("refusal (reason, available)",
              [(r.reason, r.available) for r in refused.lines],
              [("InsufficientAtp", atp)])
        check("ATP unchanged by the refusal", c.atp(sku, node), atp)
        expect_error("hold of an unknown SKU", "UnknownSku", 100,
                     lambda: c.hold([HoldLine(f"NO-SUCH-{tag}", node, 1)]))
        expect_error("ATP at an unknown node", "UnknownNode", 101,
                     lambda: c.atp(sku, f"NO-SUCH-{tag}"))
        expect_error("commit of a released hold", "WrongHoldState", 140,
                     lambda: c.commit(second.hold))
        check("GetHold of an unknown id", c.get_hold(new_id()), None)
        check("ATP at the end", c.atp(sku, node), atp)

    if token is not None:
        print("a wrong token")
        expect_error("handshake with a wrong token", "AuthenticationFailed",
                     1004, lambda: Client.connect(addr, token=token + "x"))

    print(f"all checks passed: {sku} at {node} has ATP {ON_HAND - HELD}")


def host_port(text):
    """``--addr``: HOST:PORT, checked before anything is sent."""
    host, sep, port = text.rpartition(":")
    if not (host and sep and port.isdigit() and 0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check a running promised server from Python.")
    parser.add_argument("--addr", default="127.0.0.1:7411", type=host_port,
                        help="the server's protocol address, HOST:PORT "
                             "(default: %(default)s)")
    parser.add_argument("--token",
                        help="auth token, when the server has tokens; it "
                             "needs the write (or admin) role")
    parser.add_argument("--tag", default=secrets.token_hex(4),
                        help="suffix of the node and SKU ids this run makes "
                             "(default: random)")
    args = parser.parse_args(argv)
    try:
        run(args.addr, args.token, args.tag)
    except Mismatch as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except PromisedError as e:
        print(f"FAILED: the server answered an unexpected error: {e}",
              file=sys.stderr)
        return 1
    except (OSError, ProtocolError) as e:
        print(f"FAILED: talking to {args.addr}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
