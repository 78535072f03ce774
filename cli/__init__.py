"""The shell around irq: the `irq` command (`app`), `irq dev`'s stack of processes, the benchmarks' commands
and a batch's progress bar. It drives the API, the worker, the inference service and the benchmarks, and
nothing below imports it."""
