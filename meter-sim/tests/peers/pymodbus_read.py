#!/usr/bin/env python3
"""Reads simulated Modbus meters with pymodbus (an independent client) and decodes them per the map.

Usage: pymodbus_read.py HOST BASE_PORT GATEWAYS MAP1.toml[,MAP2.toml...] INDEX [INDEX...]

Meter i is on port BASE_PORT + i % GATEWAYS, unit i // GATEWAYS + 1, and uses map i % len(maps).
The decoding here is written from the map format's description, not from the Rust decoder: registers are
big-endian 16-bit words, assembled most significant word first unless word_order = "little", then
interpreted as the entry's type, multiplied by the exact decimal scale and by the unit prefix (k, M, m).
Prints one JSON object: {"INDEX": {"map": file, "values": {obis: physical value in the channel's base
unit}}}.
"""
import json
import struct
import sys
import tomllib
from decimal import Decimal

from pymodbus.client import ModbusTcpClient

PREFIX = {"k": Decimal(1000), "M": Decimal(1000000), "m": Decimal("0.001")}
BASE_UNITS = {"Wh", "varh", "V", "A", "W", "Hz", ""}
FORMATS = {
    "u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i",
    "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d",
}


def read(client, unit, function, address, count):
    fn = client.read_holding_registers if function == "holding" else client.read_input_registers
    try:
        rr = fn(address, count=count, device_id=unit)
    except TypeError:  # older keyword
        rr = fn(address, count=count, slave=unit)
    if rr.isError():
        raise RuntimeError(f"unit {unit} {function} {address}+{count}: {rr}")
    return list(rr.registers)


def decode(entry, default_order, words):
    order = entry.get("word_order", default_order)
    if order == "little":
        words = list(reversed(words))
    raw = b"".join(struct.pack(">H", w) for w in words)
    (value,) = struct.unpack(FORMATS[entry["type"]], raw)
    value = Decimal(value) if entry["type"] in ("f32", "f64") else Decimal(int(value))
    value *= Decimal(entry.get("scale", "1"))
    unit = entry["unit"]
    if unit not in BASE_UNITS:
        value *= PREFIX[unit[0]]
    return float(value)


def main():
    host, base_port, gateways, maps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    indices = [int(i) for i in sys.argv[5:]]
    parsed = []
    for path in maps:
        with open(path, "rb") as f:
            parsed.append(tomllib.load(f))
    out = {}
    clients = {}
    for i in indices:
        port = base_port + i % gateways
        unit = i // gateways + 1
        m = parsed[i % len(parsed)]
        client = clients.get(port)
        if client is None:
            client = ModbusTcpClient(host, port=port, timeout=5)
            if not client.connect():
                raise RuntimeError(f"cannot connect to {host}:{port}")
            clients[port] = client
        values = {}
        for entry in m["register"]:
            count = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}.get(entry["type"], 4)
            words = read(client, unit, entry["function"], entry["address"], count)
            values[entry["obis"]] = decode(entry, m.get("word_order", "big"), words)
        out[str(i)] = {"map": maps[i % len(maps)], "values": values}
    for c in clients.values():
        c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
