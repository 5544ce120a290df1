"""Several processes training one benchmark's runs at once (`medsagan benchmark --jobs N`).

Runs are claimed one at a time through their lock files, so the processes need no other coordination. On
a CPU a small network trains faster as several 1-thread processes than as one process with every thread;
on a GPU one process leaves the device idle between its small kernels.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch


def threads_per_job(jobs: int) -> int:
    """An equal share of this machine's CPU threads."""
    return max(1, (os.cpu_count() or 1) // jobs)


def job_devices(device: str, jobs: int) -> list[str]:
    """Each job's device: on a machine with several GPUs, the next GPU for each job; otherwise `device`."""
    count = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    if count > 1:
        return [f"cuda:{k % count}" for k in range(jobs)]
    return [device] * jobs


class Workers:
    """The jobs beyond the first, each a `medsagan benchmark` process logging to OUT/jobK.log.

    Entered, it starts them and gives this process its share of the threads; left, it waits for them (or,
    on an interruption, stops them) and restores this process's threads.
    """

    def __init__(self, arguments: list[str], jobs: int, out: Path, devices: list[str]):
        self.arguments, self.jobs, self.out, self.devices = arguments, jobs, out, devices
        self.started: list[tuple[subprocess.Popen, Path]] = []
        self.threads = torch.get_num_threads()

    def __enter__(self) -> "Workers":
        if self.jobs == 1:
            return self
        share = str(threads_per_job(self.jobs))
        env = {**os.environ, "OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share}
        self.out.mkdir(parents=True, exist_ok=True)
        for k in range(1, self.jobs):
            log = self.out / f"job{k}.log"
            command = [sys.executable, "-m", "medsagan", "benchmark", *self.arguments, "--device", self.devices[k]]
            with open(log, "w") as stream:
                popen = subprocess.Popen([*command, "--no-progress"], stdout=stream, stderr=subprocess.STDOUT, env=env)
            self.started.append((popen, log))
        torch.set_num_threads(int(share))
        return self

    def failed(self) -> list[Path]:
        """Wait for every job; the logs of those that did not finish cleanly."""
        return [log for popen, log in self.started if popen.wait() != 0]

    def __exit__(self, kind, error, trace) -> None:
        if error is not None:
            for popen, _ in self.started:
                popen.terminate()
        for popen, _ in self.started:
            popen.wait()
        torch.set_num_threads(self.threads)
