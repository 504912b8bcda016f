"""Run a multi-worker ``tf.distribute`` program as local processes on one machine.

``tf.distribute.MultiWorkerMirroredStrategy`` reads its cluster from the
``TF_CONFIG`` environment variable. :func:`run_workers` picks free ports on
127.0.0.1, starts one process per worker with its own ``TF_CONFIG``, and waits
for all of them with a hard time limit: if one worker fails or the time runs
out, every worker still running is killed (the others would otherwise wait
forever in a collective operation). Used by the multi-worker example and tests;
handy to try multi-worker code before going to a real cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from typing import Mapping, Optional, Sequence

from keras_regkit._validation import check_int, check_range

_OWNER = "run_workers"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    Args:
        count: How many ports, >= 1.
        host: The interface to bind.

    Returns:
        A list of port numbers.

    Raises:
        ValueError: If ``count`` < 1.
    """
    count = check_int("free_ports", "count", count, 1)
    sockets = []
    try:
        for _ in range(count):  # all bound at once, so the ports are distinct
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: Sequence[int], index: int, host: str = "127.0.0.1") -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a cluster of workers on ``host:ports``.

    Worker 0 is the chief (the cluster has no separate ``chief`` task).

    Raises:
        ValueError: If ``index`` is not in ``[0, len(ports))``.
    """
    if not 0 <= index < len(ports):
        raise ValueError(f"tf_config: index must be in [0, {len(ports)}), got {index}")
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": int(index)}})


def _tail(handle, limit: int = 4000) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")[-limit:]


def run_workers(
    argv: Sequence[str],
    num_workers: int = 2,
    timeout: float = 120.0,
    env: Optional[Mapping[str, str]] = None,
    host: str = "127.0.0.1",
) -> list[str]:
    """Runs ``argv`` as ``num_workers`` local worker processes and returns their outputs.

    Args:
        argv: The command of every worker, e.g. ``[sys.executable, "train.py"]``.
        num_workers: Number of worker processes, >= 1.
        timeout: Seconds the whole cluster may run, > 0.
        env: Environment of the workers (default: this process's); each also
            gets its ``TF_CONFIG``.
        host: Interface the workers listen on.

    Returns:
        The standard output of each worker, in worker order.

    Raises:
        ValueError: For ``num_workers`` < 1 or ``timeout`` <= 0.
        RuntimeError: If a worker exits with a non-zero status (the message holds
            the end of its standard error); the other workers are killed.
        TimeoutError: If the workers are still running after ``timeout`` seconds;
            all of them are killed.
    """
    num_workers = check_int(_OWNER, "num_workers", num_workers, 1)
    timeout = check_range(_OWNER, "timeout", timeout, 0.0, None, low_inclusive=False)
    ports = free_ports(num_workers, host)
    base = dict(os.environ if env is None else env)
    workers = []
    try:
        for index in range(num_workers):
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            worker_env = {**base, "TF_CONFIG": tf_config(ports, index, host)}
            process = subprocess.Popen(list(argv), env=worker_env, stdout=out, stderr=err)
            workers.append((process, out, err))
        deadline = time.monotonic() + timeout
        while any(process.poll() is None for process, _, _ in workers):
            for index, (process, _, err) in enumerate(workers):
                if process.poll() not in (None, 0):
                    raise RuntimeError(
                        f"{_OWNER}: worker {index} exited with status {process.returncode}:\n{_tail(err)}"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{_OWNER}: the {num_workers} workers did not finish within {timeout:g} s; "
                    f"worker 0 wrote:\n{_tail(workers[0][2])}"
                )
            time.sleep(0.1)
        for index, (process, _, err) in enumerate(workers):
            if process.returncode != 0:
                raise RuntimeError(
                    f"{_OWNER}: worker {index} exited with status {process.returncode}:\n{_tail(err)}"
                )
        return [_tail(out, limit=10**7) for _, out, _ in workers]
    finally:
        for process, out, err in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
            err.close()
