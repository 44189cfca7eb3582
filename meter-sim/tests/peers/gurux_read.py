#!/usr/bin/env python3
"""Reads a `meter-sim dlms` meter with the independent Gurux DLMS client (gurux-dlms + gurux-net).

Usage: gurux_read.py --host 127.0.0.2 --port 4059 --auth none|low|gmac [--password HEX] [--ek HEX --ak HEX]
                     [--max-pdu N] [--hdlc] [--ic-first] OPS_JSON

OPS_JSON is a list of operations, each a list:
  ["register", "1.0.1.8.0"]            -> {"value": scaled value (float), "raw": int, "scaler": s, "unit": u}
  ["data", "0.0.96.1.0.255"]           -> {"value": str or int}
  ["clock"]                            -> {"value": ISO 8601 with offset}
  ["range", FROM_ISO, TO_ISO]          -> {"rows": [[ISO interval end (UTC), 1.8.0, 2.8.0], ...]}
  ["entry", INDEX, COUNT]              -> {"rows": [...]} (1-based index)
  ["entries"]                          -> {"value": entries_in_use}
Prints one JSON object {"results": [...]} on stdout. The reader loop follows Gurux's client example
(GXDLMSReader): send, receive until getData completes, receiverReady for more blocks.
"""
import argparse
import datetime
import json
import sys

from gurux_common import ReceiveParameters
from gurux_common.enums import TraceLevel  # noqa: F401  (kept for debugging)
from gurux_dlms import GXByteBuffer, GXReplyData, GXDateTime
from gurux_dlms.enums import Authentication, InterfaceType, Security, RequestTypes
from gurux_dlms.objects import GXDLMSRegister, GXDLMSData, GXDLMSClock, GXDLMSProfileGeneric
from gurux_dlms.secure import GXDLMSSecureClient
from gurux_net import GXNet
from gurux_net.enums import NetworkType


class Reader:
    def __init__(self, client, media, wait_ms=10000):
        self.client = client
        self.media = media
        self.wait_ms = wait_ms

    def read_packet(self, data, reply):
        if not data:
            return
        notify = GXReplyData()
        p = ReceiveParameters()
        p.waitTime = self.wait_ms
        if self.client.interfaceType == InterfaceType.HDLC:
            p.eop = 0x7E
        else:
            p.eop = None
            p.count = 8
        rd = GXByteBuffer()
        with self.media.getSynchronous():
            self.media.send(data)
            if not self.media.receive(p):
                raise TimeoutError("no reply")
            rd.set(p.reply)
            while not self.client.getData(rd, reply, notify):
                p.reply = None
                if notify.data.size != 0:
                    notify.clear()
                if p.eop is None:
                    p.count = max(1, self.client.getFrameSize(rd))
                if not self.media.receive(p):
                    raise TimeoutError("reply incomplete")
                rd.set(p.reply)
        if reply.error != 0:
            raise RuntimeError("DLMS error %d" % reply.error)

    def read_block(self, data, reply):
        if isinstance(data, (bytes, bytearray)):
            data = [data]
        for it in data:
            reply.clear()
            self.read_packet(it, reply)
            while reply.isMoreData():
                rr = self.client.receiverReady(reply)
                self.read_packet(rr, reply)

    def connect(self):
        reply = GXReplyData()
        if self.client.interfaceType == InterfaceType.HDLC:
            self.read_packet(self.client.snrmRequest(), reply)
            self.client.parseUAResponse(reply.data)
        reply.clear()
        self.read_block(self.client.aarqRequest(), reply)
        self.client.parseAareResponse(reply.data)
        reply.clear()
        if int(self.client.authentication) > int(Authentication.LOW):
            for it in self.client.getApplicationAssociationRequest():
                self.read_packet(it, reply)
            self.client.parseApplicationAssociationResponse(reply.data)

    def read(self, obj, attr):
        reply = GXReplyData()
        self.read_block(self.client.read(obj, attr)[0], reply)
        return self.client.updateValue(obj, attr, reply.value)

    def read_rows(self, data, pg):
        reply = GXReplyData()
        self.read_block(data, reply)
        return self.client.updateValue(pg, 2, reply.value)

    def close(self):
        try:
            reply = GXReplyData()
            self.read_block(self.client.releaseRequest(), reply)
        except Exception:  # noqa: BLE001 - the release is best effort
            pass
        try:
            if self.client.interfaceType == InterfaceType.HDLC:
                self.read_packet(self.client.disconnectRequest(), GXReplyData())
        except Exception:  # noqa: BLE001
            pass
        self.media.close()


def make_client(args, auth, client_address):
    iface = InterfaceType.HDLC if args.hdlc else InterfaceType.WRAPPER
    password = bytes.fromhex(args.password) if (args.password and auth == Authentication.LOW) else None
    c = GXDLMSSecureClient(True, client_address, 1, auth, password, iface)
    if args.max_pdu:
        c.setMaxReceivePDUSize(args.max_pdu)
    if auth == Authentication.HIGH_GMAC:
        c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        c.ciphering.systemTitle = b"GRX12345"
        c.ciphering.blockCipherKey = bytearray(bytes.fromhex(args.ek))
        c.ciphering.authenticationKey = bytearray(bytes.fromhex(args.ak))
    return c


def open_media(args):
    media = GXNet(NetworkType.TCP, args.host, args.port)
    media.open()
    return media


def iso(value):
    if isinstance(value, GXDateTime):
        value = value.value
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def parse_iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def plain(v):
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("ascii")
        except UnicodeDecodeError:
            return bytes(v).hex()
    if isinstance(v, (int, float, str)) or v is None:
        return v
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=4059)
    ap.add_argument("--auth", choices=["none", "low", "gmac"], default="none")
    ap.add_argument("--password")
    ap.add_argument("--ek")
    ap.add_argument("--ak")
    ap.add_argument("--max-pdu", type=int, default=0)
    ap.add_argument("--hdlc", action="store_true")
    ap.add_argument("--ic-first", action="store_true", help="read 0.0.43.1.0.255 as public client first")
    ap.add_argument("ops")
    args = ap.parse_args()
    ops = json.loads(args.ops)
    auth = {"none": Authentication.NONE, "low": Authentication.LOW, "gmac": Authentication.HIGH_GMAC}[args.auth]

    ic = None
    if args.ic_first:
        pub = Reader(make_client(args, Authentication.NONE, 16), open_media(args))
        pub.connect()
        d = GXDLMSData("0.0.43.1.0.255")
        ic = pub.read(d, 2)
        pub.close()

    client = make_client(args, auth, 16 if auth == Authentication.NONE else 1)
    if ic is not None and auth == Authentication.HIGH_GMAC:
        client.ciphering.invocationCounter = int(ic) + 1
    r = Reader(client, open_media(args))
    results = []
    try:
        r.connect()
        pg = None
        for op in ops:
            kind = op[0]
            if kind == "register":
                reg = GXDLMSRegister(op[1])
                r.read(reg, 3)
                r.read(reg, 2)
                results.append({"value": reg.value, "scaler": reg.scaler, "unit": int(reg.unit)})
            elif kind == "data":
                d = GXDLMSData(op[1])
                results.append({"value": plain(r.read(d, 2))})
            elif kind == "clock":
                c = GXDLMSClock("0.0.1.0.0.255")
                results.append({"value": iso(r.read(c, 2))})
            elif kind in ("range", "entry", "entries"):
                if pg is None:
                    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
                    r.read(pg, 3)
                if kind == "entries":
                    results.append({"value": r.read(pg, 7)})
                    continue
                if kind == "range":
                    data = client.readRowsByRange(pg, parse_iso(op[1]), parse_iso(op[2]))
                else:
                    data = client.readRowsByEntry(pg, int(op[1]), int(op[2]))
                rows = r.read_rows(data, pg)
                results.append({"rows": [[iso(row[0])] + [plain(v) for v in row[1:]] for row in rows]})
            else:
                raise ValueError("unknown op %r" % (kind,))
    finally:
        r.close()
    json.dump({"results": results, "invocation_counter_read": ic}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
