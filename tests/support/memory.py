"""Peak memory of a child Python: source to put at the top of its script."""
from __future__ import annotations

# Peak RSS of the process in bytes (VmHWM: getrusage's ru_maxrss would carry the forking parent's peak).
PEAK_RSS = '''
def peak_rss():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
'''
