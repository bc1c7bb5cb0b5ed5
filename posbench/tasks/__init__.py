"""`posbench tasks`: length generalisation on algorithmic tasks. One generator per task in
generators/, the task registry and datasets in data.py, the experiment in run.py, its plots in plots.py."""
