"""A launcher that measures one command's own CPU time and peak RSS (shared by tests that bound them)."""

# Runs argv[2:] and writes its wait status, CPU seconds and peak RSS to argv[1]. The command is started from
# this small process because a child's peak RSS counts the memory of the process it was forked from (pytest's).
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024], out)
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""
