"""KFP component of the source_version step: wraps :func:`reclora.storage.source_fingerprint` (the raw
source's fingerprint, an input of the prepare step's cache key)."""


def source_version(source_path: str, run_id: str) -> str:
    """The raw source's fingerprint (a content hash, the objects' ETags, or the DVC commit and md5): never
    cached itself, it is an input of the prepare step, so prepare's cache key changes when the data does.
    A path this pod cannot see (one on the Spark work volume) gets the run's id: no cache hit across runs."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.storage import source_fingerprint

    return source_fingerprint(source_path, unseen=run_id)
