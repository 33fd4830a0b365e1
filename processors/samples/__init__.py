"""Sample record processors built on the processors.kclpy SDK.

Each runs as ``python -m processors.samples.NAME`` or directly as a script
(``processors/samples/NAME.py``), which is what a properties file's
``executableName`` usually names:

* ``echo_processor``: logs every record to stderr, checkpoints every batch.
* ``noop_processor``: does nothing with records, checkpoints every N records
  (for benchmarks of the daemon).
* ``record_logger``: appends each record as a tab-separated line to the file
  named by ``KCL_SAMPLE_OUTPUT``, then checkpoints (for delivery tests).
* ``scripted_processor``: makes the checkpoint calls a script lists and logs
  every call it receives (for comparing SDKs on golden transcripts).

``checkpointing`` holds the retry loop they share; ``transcripts`` reads
golden transcripts and plays the daemon's side of one over real pipes.
"""
