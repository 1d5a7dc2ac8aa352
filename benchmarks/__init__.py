"""`make bench`: the ledger's command path and read side, measured against plain inserts
into the old racing table on the same database, in the same run (see benchmarks/run.py).
"""
