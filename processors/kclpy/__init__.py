"""A fast processor SDK for the multilang protocol, with the API of amazon_kclpy v3.

A record processor written for ``amazon_kclpy`` runs here by changing only its
imports::

    from processors.kclpy import kcl          # was: from amazon_kclpy import kcl
    from processors.kclpy.v3 import processor  # was: from amazon_kclpy.v3 import processor

    class RecordProcessor(processor.RecordProcessorBase):
        def initialize(self, initialize_input): ...
        def process_records(self, process_records_input): ...
        def lease_lost(self, lease_lost_input): ...
        def shard_ended(self, shard_ended_input):
            shard_ended_input.checkpointer.checkpoint()
        def shutdown_requested(self, shutdown_requested_input):
            shutdown_requested_input.checkpointer.checkpoint()

    if __name__ == "__main__":
        kcl.KCLProcess(RecordProcessor()).run()

The module paths mirror amazon_kclpy's (``kcl``, ``messages``, ``dispatch``,
``checkpoint_error``, ``v2.processor``, ``v3.processor``). What differs:

* speed: one ``orjson.loads`` per line, thin record wrappers, and base64 is
  decoded only when a record's ``binary_data`` is read;
* the protocol channel is guarded: ``KCLProcess.run()`` moves the real stdout
  to a private descriptor and points fd 1 and ``sys.stdout`` at stderr, so a
  ``print()`` in processor code cannot corrupt the protocol;
* prepared (two-phase) checkpoints: ``checkpointer.prepare_checkpoint(...)``
  and the pending checkpoint on the initialize input, when the daemon
  announces the extension (kcl-daemon does; the official daemon does not).
"""

__version__ = "3.2.0+kcl_daemon"
