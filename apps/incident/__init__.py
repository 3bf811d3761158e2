"""The lab's incident tooling, behind the `shoplab` command: diagnosis from metrics, traces and logs.

It reads only what any real system shows (Prometheus, Tempo, Loki); it never asks the shop which faults are
injected, so it works the same on incidents the shop knows nothing about.
"""
