"""The synthetic tasks' instance generators, one file per kind of task (common.py: the vocabulary
and the Instance they share). tasks/data.py registers them (TASKS) and batches their instances."""
