#!/usr/bin/env python3
"""Runs one command and measures it as a user would: wall time from start to exit,
CPU seconds (user + system) of the command and every child it waited for, and the
peak resident set size (the largest of the command and its waited-for children, as
the kernel's rusage reports it). Appends one JSON line to --results.

usage: peer_measure.py --results FILE --name NAME [--log FILE] [--timeout S] -- CMD...
The command's stdout and stderr go to --log (default: inherited). A line of its stdout
of the form `RESULT {json}` is merged into the record (engine-reported figures;
the measured keys name, cmd, rc, log, wall_s, cpu_s, peak_rss_mb, loadavg1_start win).
Exit code: the command's (124 on timeout).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--log")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("no command after --")
    load1 = os.getloadavg()[0]
    out = open(a.log, "w") if a.log else None
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out or None, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)
    timed_out = False
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > a.timeout:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.monotonic() - t0
    code = 124 if timed_out else os.waitstatus_to_exitcode(status)
    rec = {
        "name": a.name,
        "cmd": cmd,
        "rc": code,
        "log": a.log,
        "wall_s": round(wall, 4),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "loadavg1_start": load1,
    }
    if out:
        out.close()
        for line in open(a.log, errors="replace"):
            if line.startswith("RESULT "):
                try:
                    for k, v in json.loads(line[len("RESULT "):]).items():
                        rec.setdefault(k, v)  # the measured figures win over reported ones
                except json.JSONDecodeError as e:
                    rec["reported_error"] = f"{a.log}: RESULT line is not JSON: {e}"
    with open(a.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))
    sys.exit(code)


if __name__ == "__main__":
    main()
