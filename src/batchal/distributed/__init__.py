"""Beyond one process, on Ray: score a streamed pool into sharded Parquet (``scoring``), select
over a scored folder (``selection``) and run whole studies as Ray tasks (``studies``).

Ray is an optional extra (``pip install -c constraints.txt -e ".[ray]"``) imported only inside
the functions that need it (``cluster.require_ray``); every entry point also runs in-process,
with identical output, which is what the distributed results are tested against.
"""
