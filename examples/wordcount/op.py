"""A gyoza op: counts the words of `text` and returns the `top` most frequent.

The op contract, the same for a container image and a local command:
- the run's inputs arrive on stdin as one JSON object, then stdin is closed;
- the outputs go to stdout as one JSON object (nothing else may be printed there);
- `progress: N` and `info: TEXT` lines on stderr become PROGRESS and INFO events;
- exit 0 completes the run; any other exit fails it with the tail of stderr.
GYOZA_RUN_ID, GYOZA_ATTEMPT and GYOZA_WORKER_ID (and GYOZA_GPU_ID) are in the environment.
"""

import collections
import json
import os
import sys


def main() -> int:
    inputs = json.load(sys.stdin)
    text = inputs.get("text")
    if not isinstance(text, str):
        print(f"text must be a string, got {type(text).__name__}", file=sys.stderr)
        return 2
    top = int(inputs.get("top", 3))
    print(f"info: counting words for run {os.environ.get('GYOZA_RUN_ID', '?')}", file=sys.stderr)
    counts: collections.Counter[str] = collections.Counter()
    lines = text.splitlines() or [""]
    for i, line in enumerate(lines, 1):
        counts.update(word.strip(".,;:!?\"'()").lower() for word in line.split())
        print(f"progress: {100 * i // len(lines)}", file=sys.stderr, flush=True)
    counts.pop("", None)
    json.dump({"words": sum(counts.values()), "top": counts.most_common(top)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
