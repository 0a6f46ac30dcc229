"""The domain: runs, attempts, events and the state machine. Plain Python, no I/O."""
