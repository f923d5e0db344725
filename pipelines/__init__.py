"""The pipeline DAG, its parameters and compiling, and how runs start: kfp.local, submit, schedules, the tuning-job trigger."""
