"""Run a command and write its own rusage (and its start and wall time) as JSON to a file:
python -I -S bench/launch.py OUT CMD...  (also inside the image: bench/image.py)

Linux carries a process's peak RSS across exec: a child forked from the (large) benchmark process
would report the benchmark's own RSS. Forked from this small process (stdlib only, no site), the
child's peak RSS is its own: the floor is this launcher's resident size at the fork (~8 MB; the
launcher's own peak, inherited from the benchmark at its exec, does not pass on through fork).
"""
import json
import os
import sys
import time

out, argv = sys.argv[1], sys.argv[2:]
started = time.time()
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kb": usage.ru_maxrss,
               "started": started, "wall_s": time.time() - started}, f)
sys.exit(os.waitstatus_to_exitcode(status))
