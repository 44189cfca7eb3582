#!/usr/bin/env python3
"""The gurux-dlms Python client (gurux-dlms + gurux-net) polling a sample of `meter-sim dlms` meters
one after another, each session reading what the head-end's first-contact session reads:

  connect, AARQ (LLS password or HLS-GMAC with suite-0 ciphering, + the HLS pass when GMAC),
  one GET with-list (clock, 4 billing registers' values and scaler_units, the load profile's
  capture objects), the load profile by range over the last --history-minutes, the standard event
  log by range over the same span, release, close.

Usage: gurux_round.py --port P --keys KEYS.CSV --meters N --sample S [--auth low|gmac]
Prints one JSON line: {sessions, ok, failed, elapsed_s, sessions_per_s, p50_ms, p99_ms, rows, first_error}.
Meter i listens on 127.0.0.0 + i + 2 (see meter_sim::fleet::loopback_address); the sample is spread
evenly over the fleet.
"""
import argparse
import contextlib
import csv
import io
import datetime
import json
import pathlib
import sys
import time

from gurux_dlms import GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient
from gurux_net import GXNet
from gurux_net.enums import NetworkType

# The reader loop (send, receive until getData completes, receiverReady for more blocks) is the
# interoperability test's.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "meter-sim" / "tests" / "peers"))
from gurux_read import Reader  # noqa: E402

REGISTERS = ["1.0.1.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255", "1.0.2.8.0.255"]


def loopback(i):
    v = 0x7F000000 | ((i % ((1 << 24) - 3)) + 2)
    return "%d.%d.%d.%d" % (v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255)


def session(args, keys, index, ic):
    serial = "SIM%08d" % (index + 1)
    k = keys[serial]
    if args.auth == "low":
        c = GXDLMSSecureClient(True, 1, 1, Authentication.LOW, bytes.fromhex(k["password"]), InterfaceType.WRAPPER)
    else:
        c = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER)
        c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        c.ciphering.systemTitle = b"GRX12345"
        c.ciphering.blockCipherKey = bytearray(bytes.fromhex(k["ek"]))
        c.ciphering.authenticationKey = bytearray(bytes.fromhex(k["ak"]))
        c.ciphering.invocationCounter = ic
    media = GXNet(NetworkType.TCP, loopback(index), args.port)
    media.open()
    r = Reader(c, media)
    rows = 0
    try:
        reply = GXReplyData()
        r.read_block(c.aarqRequest(), reply)
        c.parseAareResponse(reply.data)
        if args.auth == "gmac":
            reply.clear()
            for it in c.getApplicationAssociationRequest():
                r.read_packet(it, reply)
            c.parseApplicationAssociationResponse(reply.data)
        clock = GXDLMSClock("0.0.1.0.0.255")
        regs = [GXDLMSRegister(o) for o in REGISTERS]
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        items = [(clock, 2)] + [(g, 2) for g in regs] + [(g, 3) for g in regs] + [(pg, 3)]
        values = []
        for msg in c.readList(items):
            reply = GXReplyData()
            r.read_block(msg, reply)
            values.extend(reply.value)
        c.updateValues(items, values)
        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(minutes=args.history_minutes)
        reply = GXReplyData()
        r.read_block(c.readRowsByRange(pg, start, now), reply)
        rows += len(c.updateValue(pg, 2, reply.value) or [])
        ev = GXDLMSProfileGeneric("0.0.99.98.0.255")
        ev.addCaptureObject(clock, 2, 0)
        reply = GXReplyData()
        r.read_block(c.readRowsByRange(ev, start, now), reply)
    finally:
        try:
            r.read_block(c.releaseRequest(), GXReplyData())
        except Exception:  # noqa: BLE001 - best effort, like the head-end's
            pass
        media.close()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--meters", type=int, required=True)
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--auth", choices=["low", "gmac"], default="low")
    ap.add_argument("--history-minutes", type=int, default=60)
    args = ap.parse_args()
    with open(args.keys, newline="") as f:
        keys = {row["serial"]: row for row in csv.DictReader(f)}
    n = min(args.sample, args.meters)
    sample = [i * args.meters // n for i in range(n)]
    # Above anything the head-end used with its own system title.
    ic = int(time.time()) - 1_700_000_000
    times, ok, failed, rows, first_error = [], 0, 0, 0, None
    t0 = time.perf_counter()
    # gurux prints "Encryption is applied." for every ciphered APDU: keep stdout for the result.
    quiet = contextlib.redirect_stdout(io.StringIO())
    quiet.__enter__()
    for i in sample:
        s = time.perf_counter()
        try:
            rows += session(args, keys, i, ic)
            ok += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            failed += 1
            first_error = first_error or "%s: %r" % (loopback(i), e)
        times.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    quiet.__exit__(None, None, None)
    times.sort()
    q = lambda p: round(times[min(len(times) - 1, int(p * len(times)))] * 1000, 2)  # noqa: E731
    json.dump({"sessions": n, "ok": ok, "failed": failed, "elapsed_s": round(elapsed, 3),
               "sessions_per_s": round(ok / elapsed, 1), "p50_ms": q(0.5), "p99_ms": q(0.99),
               "rows": rows, "first_error": first_error}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
