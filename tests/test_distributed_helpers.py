"""irdistill.distributed under torchrun on CPUs: the barrier really waits (accelerate treats
CPU processes as independent unless told they are CPU processes)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import time
from irdistill import distributed
distributed.wait_for_everyone()  # the process group is set up here
if distributed.is_main():
    time.sleep(3)
start = time.time()
distributed.wait_for_everyone()
print(f"rank {distributed.rank()} of {distributed.world_size()} waited {time.time() - start:.1f}",
      flush=True)
with distributed.main_process_first():
    print(f"rank {distributed.rank()} inside at {time.time():.2f}", flush=True)
    if distributed.is_main():
        time.sleep(1)
"""


def test_barrier_and_main_process_first_under_torchrun(tmp_path):
    script = tmp_path / "barrier.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0",
                          str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count(" waited ") == 2, out.stdout + out.stderr[-2000:]
    waited = {line.split()[1]: float(line.split()[-1]) for line in out.stdout.splitlines()
              if " waited " in line}
    assert waited["1"] >= 2.0 and waited["0"] < waited["1"] - 1.5  # for rank 0's sleep
    inside = {line.split()[1]: float(line.split()[-1]) for line in out.stdout.splitlines()
              if " inside at " in line}
    assert inside["1"] >= inside["0"] + 0.9  # rank 1 entered after rank 0 left
