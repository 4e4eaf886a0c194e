#!/usr/bin/env python3
"""Python side of scripts/gpu-check.sh (read its header first).

Builds the classifier of classify.weights.json (same weights as classify.onnx)
in torch on a device, and:

  serve   --device cuda --port-file F   Open Inference Protocol v2 server on
                                        127.0.0.1 (POST /v2/models/classify/infer),
                                        the endpoint of the host's `tensor-classify`
                                        remote model; writes its port to F.
  native  --device cuda --n N           the same inference in-process, timed.
  http    --port P --n N                a plain Python client against the server,
                                        timed (the HTTP hop without wasm).
  compare NATIVE HTTP GUEST [CPU]       checks the numbers agree and prints the table.

Timings cover one whole inference as the guest sees it: input to the device,
forward, outputs back to the host (`.tolist()` synchronises).

`--engine python` replaces torch with plain Python floats on the CPU. It exists
only to test the plumbing on a machine without torch (GPU_CHECK_DRY_RUN=1 in
gpu-check.sh); its numbers are not GPU results and are labelled so.

Standard library + torch only: the GPU machine has no network.
"""

import argparse
import http.client
import json
import math
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
X = [1.0, 2.0, 3.0, 4.0]
WARMUP = 100


def load_weights():
    with open(os.path.join(HERE, "classify.weights.json")) as f:
        w = json.load(f)
    return w["W"], w["b"]


class TorchModel:
    def __init__(self, device):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            sys.exit("gpu_check: torch.cuda.is_available() is false")
        self.torch = torch
        self.device = torch.device(device)
        w, b = load_weights()
        self.w = torch.tensor(w, dtype=torch.float32, device=self.device)
        self.b = torch.tensor(b, dtype=torch.float32, device=self.device)
        self.label = f"torch {torch.__version__} on {device}"
        if self.device.type == "cuda":
            self.label += f" ({torch.cuda.get_device_name(self.device)})"

    def __call__(self, x, shape):
        t = self.torch.tensor(x, dtype=self.torch.float32, device=self.device).reshape(shape)
        logits = t @ self.w + self.b
        probs = self.torch.softmax(logits, dim=1)
        return logits.tolist(), probs.tolist()


class PythonModel:
    """Plain-Python stand-in for plumbing tests only (not a GPU result)."""

    label = "pure Python on the CPU (DRY RUN stand-in, not a GPU result)"

    def __init__(self, _device):
        self.w, self.b = load_weights()

    def __call__(self, x, shape):
        logits = [sum(x[i] * self.w[i][j] for i in range(4)) + self.b[j] for j in range(3)]
        m = max(logits)
        e = [math.exp(v - m) for v in logits]
        s = sum(e)
        return [logits], [[v / s for v in e]]


def model(args):
    return (TorchModel if args.engine == "torch" else PythonModel)(args.device)


def pct(times, p):
    t = sorted(times)
    return t[max(0, min(len(t) - 1, math.ceil(len(t) * p / 100) - 1))]


def serve(args):
    m = model(args)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real model server

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out in two writes; without NODELAY, Nagle's
            # algorithm and delayed ACKs add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(200 if self.path == "/v2/health/ready" else 404, {})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v2/models/classify/infer":
                return self.reply(404, {"error": "unknown model"})
            try:
                inp = json.loads(body)["inputs"][0]
                if inp["datatype"] != "FP32" or inp["shape"] != [1, 4] or len(inp["data"]) != 4:
                    raise ValueError(f"expected FP32 [1,4], got {inp['datatype']} {inp['shape']}")
                with lock:
                    logits, probs = m(inp["data"], inp["shape"])
            except (KeyError, ValueError, TypeError, IndexError) as e:
                return self.reply(400, {"error": str(e)})
            self.reply(200, {"model_name": "classify", "outputs": [
                {"name": "logits", "shape": [1, 3], "datatype": "FP32", "data": logits},
                {"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": probs},
            ]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    print(f"gpu_check: serving {m.label} on 127.0.0.1:{server.server_address[1]}", file=sys.stderr)
    server.serve_forever()


def native(args):
    m = model(args)
    times = []
    out = None
    for i in range(WARMUP + args.n):
        start = time.perf_counter_ns()
        out = m(X, [1, 4])
        if i >= WARMUP:
            times.append(time.perf_counter_ns() - start)
    json.dump({"label": m.label, "logits": out[0][0], "probs": out[1][0],
               "p50_us": pct(times, 50) / 1000, "p99_us": pct(times, 99) / 1000, "n": args.n}, sys.stdout)


def http_client(args):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]})
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    times = []
    for i in range(WARMUP + args.n):
        start = time.perf_counter_ns()
        conn.request("POST", "/v2/models/classify/infer", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            sys.exit(f"gpu_check: server answered {resp.status}: {data[:200]!r}")
        if i >= WARMUP:
            times.append(time.perf_counter_ns() - start)
    json.dump({"p50_us": pct(times, 50) / 1000, "p99_us": pct(times, 99) / 1000, "n": args.n}, sys.stdout)


def guest_output(path):
    """nn-classify's two JSON lines: outputs, then the bench line."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    outs = {o["name"]: o["data"] for o in lines[0]["outputs"]}
    bench = lines[1]["bench"] if len(lines) > 1 else None
    return outs, bench


def compare(args):
    with open(args.native) as f:
        nat = json.load(f)
    with open(args.http) as f:
        hcl = json.load(f)
    guest, bench = guest_output(args.guest)
    rows = [("logits", nat["logits"]), ("probs", nat["probs"])]
    worst = 0.0
    for name, want in rows:
        got = guest[name]
        if len(got) != len(want):
            sys.exit(f"gpu_check: {name}: guest {got} vs native {want}")
        worst = max([worst] + [abs(g - w) for g, w in zip(got, want)])
    cpu_note = ""
    if args.cpu:
        cpu, _ = guest_output(args.cpu)
        cpu_worst = max(abs(g - w) for name, want in rows for g, w in zip(cpu[name], want))
        worst = max(worst, cpu_worst)
        cpu_note = f"; guest on this machine's CPU ONNX Runtime agrees within {cpu_worst:.2e}"
    match = worst <= 1e-5
    print(f"model: examples/nn-models classifier, x = {X}")
    print(f"native: {nat['label']}")
    print(f"native  logits {nat['logits']}  probs {nat['probs']}")
    print(f"guest   logits {guest['logits']}  probs {guest['probs']}")
    print(f"match: {'yes' if match else 'NO'} (max |diff| {worst:.2e}, tolerance 1e-5{cpu_note})")
    print()
    print(f"| path | p50 µs | p99 µs | p50 / native |")
    print(f"|---|---:|---:|---:|")
    base = nat["p50_us"]
    print(f"| native (in-process) | {nat['p50_us']:.1f} | {nat['p99_us']:.1f} | 1.00x |")
    print(f"| Python HTTP client -> v2 server | {hcl['p50_us']:.1f} | {hcl['p99_us']:.1f} | {hcl['p50_us'] / base:.2f}x |")
    if bench:
        g50, g99 = bench["p50_ns"] / 1000, bench["p99_ns"] / 1000
        print(f"| guest: nn-classify -> wasi-nn -> v2 server | {g50:.1f} | {g99:.1f} | {g50 / base:.2f}x |")
        print()
        print(f"overhead ratio guest / native: {g50 / base:.2f}x (p50); "
              f"guest / plain HTTP client: {g50 / hcl['p50_us']:.2f}x")
    sys.exit(0 if match else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "native"):
        s = sub.add_parser(name)
        s.add_argument("--engine", choices=["torch", "python"], default="torch")
        s.add_argument("--device", default="cuda")
        if name == "serve":
            s.add_argument("--port-file", required=True)
        else:
            s.add_argument("--n", type=int, default=1000)
    s = sub.add_parser("http")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--n", type=int, default=1000)
    s = sub.add_parser("compare")
    s.add_argument("native")
    s.add_argument("http")
    s.add_argument("guest")
    s.add_argument("cpu", nargs="?")
    args = p.parse_args()
    {"serve": serve, "native": native, "http": http_client, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
