"""The garbage collector of a server process, tuned once the application is loaded.

A server process holds thousands of long-lived objects (every open socket's consumer,
writer, scope and buffers), and Python's defaults collect as if it were a short script: the
youngest generation after 700 new objects, and a full collection, which walks every object
of the process and stalls every socket meanwhile, after each 25% growth of the long-lived
ones. Measured on 2 cores while 5,000 sockets reopened after a restart: 13 full collections
of up to 440 ms each, 2.6 s in all, about a third of the process's CPU. With the settings
below: 2 full collections and 0.5 s of collecting in all, and every socket back and caught
up in 9 to 13 s instead of 13 to 18 (`benchmarks/bench_fanout.py --storm 5000`).
"""

import gc

# Net new container objects before the youngest generation is collected (Python's default:
# 700), and how many collections of each generation before the next one's (default: 10, 10).
# Objects freed by their reference count (most of a request's or a frame's) never count;
# what does is mostly what lives on, which each young collection would only walk again.
THRESHOLDS = (50_000, 20, 10)


def tune_after_startup() -> None:
    """Collect startup's own garbage, freeze what is left, and collect less often.

    Everything loaded by then (Django, the apps, their modules) lives as long as the
    process: frozen, the full collections skip it (measured: about 50 ms a collection, 10 ms
    with it frozen).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
