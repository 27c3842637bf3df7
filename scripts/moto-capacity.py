#!/usr/bin/env python3
"""How many messages per second moto's SQS server takes by itself, without wald.

Starts `moto_server` on 127.0.0.1 (a free port), then, for each N given, creates a fresh
standard queue and sends N messages into it as SendMessageBatch calls of 10 (AWS JSON
protocol, the one aws-sdk-sqs speaks, 256-byte bodies, the four string attributes the wald
mirror sets), one call at a time over one keep-alive connection; prints messages/s and
moto's CPU per call (from /proc). Stops moto by its pid at the end.

    $CARGO_TARGET_DIR/pyenv/bin/python scripts/moto-capacity.py [N ...]   (default 100 500 1000 2000)

Uses only the standard library; MOTO_SERVER (default $CARGO_TARGET_DIR/pyenv/bin/moto_server)
names the server executable.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wald-target"))
    server = os.environ.get("MOTO_SERVER", os.path.join(target, "pyenv/bin/moto_server"))
    sizes = [int(a) for a in sys.argv[1:]] or [100, 500, 1000, 2000]
    port = free_port()
    moto = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or moto.poll() is not None:
                    sys.exit("moto_server did not start")
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def call(action, body):
            conn.request(
                "POST",
                "/",
                json.dumps(body),
                {
                    "X-Amz-Target": "AmazonSQS." + action,
                    "Content-Type": "application/x-amz-json-1.0",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
                },
            )
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                sys.exit(f"{action}: {r.status} {data[:300]!r}")
            return json.loads(data)

        attrs = {
            k: {"DataType": "String", "StringValue": "x" * 16}
            for k in ["id", "namespace", "partition", "offset"]
        }
        body = '{"t":1,"pad":"' + "x" * 230 + '"}'
        entries = [{"Id": str(j), "MessageBody": body, "MessageAttributes": attrs} for j in range(10)]
        print("messages into a fresh queue | messages/s | moto CPU ms per SendMessageBatch of 10")
        for n in sizes:
            url = call("CreateQueue", {"QueueName": f"cap-{n}-{time.time_ns()}"})["QueueUrl"]
            calls = max(n // 10, 1)
            c0, t0 = cpu_secs(moto.pid), time.time()
            for _ in range(calls):
                call("SendMessageBatch", {"QueueUrl": url, "Entries": entries})
            dt, dc = time.time() - t0, cpu_secs(moto.pid) - c0
            print(f"{calls * 10} | {calls * 10 / dt:.0f} | {dc / calls * 1000:.1f}")
    finally:
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()
