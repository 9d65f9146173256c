"""Multi-rank tests: marked ``mpi``, they run in every rank under

    mpiexec -n 2 python -m pytest -p no:cacheprovider -m mpi tests/distributed

and are skipped in a single process (a plain ``python -m pytest``), where
there is no second rank to talk to.
"""

import faulthandler
import os

import pytest

# The variables MPI launchers set in every process they start (MPICH/Hydra, Open MPI, PMIx, Slurm).
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS")
# A rank whose partner failed would wait in a collective for ever: give up after this long, which
# makes mpiexec stop the whole job with the traceback of where it hung.
HANG_TIMEOUT_S = 300


def launched_world_size():
    """How many processes the MPI launcher started (1 when none did), read without starting MPI."""
    for name in LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def pytest_collection_modifyitems(config, items):
    if launched_world_size() >= 2:
        try:
            import mpi4py  # noqa: F401, PLC0415
        except ImportError:
            reason = "mpi4py is not installed (pip install -e '.[dist]')"
        else:
            return
    else:
        reason = "needs 2 MPI ranks: mpiexec -n 2 python -m pytest -p no:cacheprovider -m mpi tests/distributed"
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "mpi" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def hang_watchdog(request):
    if "mpi" not in request.keywords or launched_world_size() < 2:
        yield
        return
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def mpi_process_group():
    """One MPI process group of exactly 2 ranks for a whole test module, destroyed after it."""
    import minialex.distributed as dist  # noqa: PLC0415

    dist.init_process_group("mpi")
    assert dist.get_world_size() == 2
    yield
    dist.destroy_process_group()
