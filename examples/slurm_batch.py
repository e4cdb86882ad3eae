"""Process an archive of recordings on a SLURM cluster: dask-jobqueue + `online-cnmfe batch`.

Run it on the login node (or in a small long-running job) of the cluster, inside the
environment where online-cnmfe is installed with the batch extra and dask-jobqueue::

    pip install "online-cnmfe[batch]" dask-jobqueue
    python examples/slurm_batch.py /data/archive/*/Miniscope --out-dir /scratch/results \\
        --nodes 20 --cores 32 --memory 120GiB --walltime 04:00:00 --queue compute \\
        --config my_params.toml --manifest sessions.csv

It starts a Dask scheduler here, asks SLURM for ``--nodes`` jobs of ``--cores`` one-thread
worker processes each (one session per worker at a time), and runs ``online-cnmfe batch`` on
that cluster, with every other option passed through unchanged. ``--dry-run`` prints the job
script SLURM would get and stops. docs/batch.md explains the sizing (memory per worker, I/O).
"""

from __future__ import annotations

import argparse
import sys

THREADS_ENV = (
    "export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1"
)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Any other option (inputs, --out-dir, --config, --set, --manifest, --force) is "
        "passed to `online-cnmfe batch`.",
    )
    p.add_argument("--nodes", type=int, default=2, help="SLURM jobs (one per node)")
    p.add_argument("--cores", type=int, default=8, help="cores per job = worker processes")
    p.add_argument("--memory", default="32GiB", help="memory per job (split between workers)")
    p.add_argument("--walltime", default="02:00:00", help="time limit of each job")
    p.add_argument("--queue", help="SLURM partition")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--local-directory", default="$TMPDIR", help="node-local scratch for Dask")
    p.add_argument("--dry-run", action="store_true", help="print the job script and stop")
    args, batch_args = p.parse_known_args()

    import dask
    from dask_jobqueue import SLURMCluster

    from online_cnmfe.cli import main as online_cnmfe

    # The scheduler runs in this process: a worker death fails its session at once (batch
    # retries it once itself), as on the local cluster of `online-cnmfe batch`.
    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    cluster = SLURMCluster(
        cores=args.cores,
        processes=args.cores,  # one thread per worker: one session per core
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        local_directory=args.local_directory,
        job_script_prologue=[THREADS_ENV],  # before numpy/numba start in the workers
    )
    if args.dry_run:
        sys.stdout.write(cluster.job_script() + "\n")
        cluster.close()
        return 0
    cluster.scale(jobs=args.nodes)  # sessions start as the jobs' workers join
    try:
        return online_cnmfe(["batch", *batch_args, "--scheduler", cluster.scheduler_address])
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
