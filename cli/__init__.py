"""The shell around irq: the `irq` command (`app`), `irq dev`'s stack of processes, the benchmarks' commands
and a batch's progress bar. It drives the API, the worker and the inference service, none of which imports
it; the benchmarks and the tests start their systems with its stack."""
