"""A tiny op for `gyoza-grpc worker --command`: JSON in, JSON out.

Reads the run's inputs as a JSON object on stdin, e.g. {"x": 21}, reports progress on stderr,
and writes its outputs as a JSON object on stdout: {"y": 42}. A non-number x fails the run.

    echo '{"x": 21}' | python examples/double.py
"""

import json
import os
import sys
import time

inputs = json.load(sys.stdin)
x = inputs.get("x")
if not isinstance(x, int | float) or isinstance(x, bool):
    print(f"x must be a number, got {x!r}", file=sys.stderr)
    sys.exit(1)
print(f"info: doubling {x} (run {os.environ.get('GYOZA_RUN_ID', '?')})", file=sys.stderr)
time.sleep(float(inputs.get("sleep_s", 0.5)))
print("progress: 50", file=sys.stderr, flush=True)
time.sleep(float(inputs.get("sleep_s", 0.5)))
json.dump({"y": x * 2}, sys.stdout)
