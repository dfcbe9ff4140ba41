"""irdistill.distributed under torchrun on CPUs: the barrier really waits."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import time
from irdistill import distributed

# each rank writes its own file: the ranks share one stdout, where lines can interleave
log = open(f"{sys.argv[1]}/rank{distributed.rank()}.txt", "w")
distributed.wait_for_everyone()  # the process group is set up here
if distributed.is_main():
    time.sleep(3)
start = time.time()
distributed.wait_for_everyone()
log.write(f"waited {time.time() - start:.2f}\\n")
log.flush()
with distributed.main_process_first():
    log.write(f"inside {time.time():.3f}\\n")
    log.flush()
    if distributed.is_main():
        time.sleep(1)
"""


def test_barrier_and_main_process_first_under_torchrun(tmp_path):
    script = tmp_path / "barrier.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0",
                          str(script), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    logs = {}
    for r in (0, 1):
        path = tmp_path / f"rank{r}.txt"
        assert path.exists(), out.stdout + out.stderr[-2000:]
        logs[r] = dict(line.split() for line in path.read_text().splitlines())
    waited = {r: float(log["waited"]) for r, log in logs.items()}
    inside = {r: float(log["inside"]) for r, log in logs.items()}
    assert waited[1] >= 2.0 and waited[0] < waited[1] - 1.5  # for rank 0's sleep
    assert inside[1] >= inside[0] + 0.9  # rank 1 entered after rank 0 left
