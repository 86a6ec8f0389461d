"""HTTP load generator for the benchmarks: keep-alive HTTP/1.1 connections on one asyncio
loop, each sending its next request as soon as the previous answer is read (a closed loop).
Runs as its own process so the client does not share the server's interpreter; prints its
figures as JSON on stdout.

    python bench/loadgen.py --port 8000 --path /api/v1/jobs/<id> --header "Authorization: Token t"
        [--method GET] [--body '{...}'] [--connections 16] [--seconds 10 | --requests 5000]
"""

import argparse
import asyncio
import json
import time


def _request(method: str, path: str, headers: list[str], body: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    payload = body.encode()
    if payload:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length) if length else b""
    body = b""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def _connection(args, request: bytes, state: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    try:
        while not state["stop"]:
            if args.requests and state["sent"] >= args.requests:
                return
            state["sent"] += 1
            began = time.perf_counter()
            writer.write(request)
            status, body = await _response(reader)
            took = (time.perf_counter() - began) * 1000
            if time.perf_counter() >= state["measure_from"]:
                state["latencies"].append(took)
                state["statuses"][status] = state["statuses"].get(status, 0) + 1
                if args.ids and status < 300:
                    state["ids"].append(json.loads(body)["id"])
    finally:
        writer.close()


async def _main(args) -> dict:
    headers = list(args.header or [])
    request = _request(args.method, args.path, headers, args.body)
    state = {
        "stop": False,
        "sent": 0,
        "latencies": [],
        "statuses": {},
        "ids": [],
        "measure_from": time.perf_counter() + args.warmup,
    }
    tasks = [
        asyncio.create_task(_connection(args, request, state)) for _ in range(args.connections)
    ]
    if args.requests:
        await asyncio.gather(*tasks)
    else:
        await asyncio.sleep(args.warmup + args.seconds)
        state["stop"] = True
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - state["measure_from"]
    latencies = sorted(state["latencies"])

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, round(q / 100 * (len(latencies) - 1)))], 2)

    figures = {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "statuses": {str(code): count for code, count in sorted(state["statuses"].items())},
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(latencies[-1], 2),
    }
    if args.ids:
        figures["ids"] = state["ids"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", help="'Name: value', repeatable")
    parser.add_argument("--body", default="")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not measured")
    parser.add_argument("--ids", action="store_true", help="collect the `id` of each answer")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args))))


if __name__ == "__main__":
    main()
