"""denet as bench/peers.ts runs it: attach to a pid (the container's init),
sample every 100 ms (denet's finest documented step) until it exits, then
print one JSON line: the samples, this process's CPU from attach on, and its
peak RSS.   python denet-watch.py <pid>"""
import json, resource, sys, time
import denet

pid = int(sys.argv[1])
cpu0 = time.process_time()
rows = []
try:
    monitor = denet.ProcessMonitor.from_pid(pid=pid, base_interval_ms=100, max_interval_ms=100, store_in_memory=False, quiet=True, include_children=True)
    while monitor.is_running():
        s = json.loads(monitor.sample_once() or "null") if True else None
        if s:
            a = s.get("aggregated") or s
            rows.append([a["ts_ms"], a["cpu_usage"], a["mem_rss_kb"] * 1024])
        time.sleep(0.1)
    error = None
except Exception as e:  # the process went before attach
    error = str(e)
print(json.dumps({"rows": rows, "cpuSeconds": time.process_time() - cpu0, "maxRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "error": error}))
