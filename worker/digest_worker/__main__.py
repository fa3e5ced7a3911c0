"""`python -m digest_worker`: the same as `digestctl worker`."""

from digest_worker.cli import worker

if __name__ == "__main__":
    worker(prog_name="python -m digest_worker")
