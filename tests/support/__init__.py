"""Helpers shared by the tests: polling (waiting), Kinesis stream set-up and reading (streams), and
the official amazon_kclpy used as a reference child processor (kclpy)."""
