"""The v2 processor API of amazon_kclpy (``process_records(input)``, ``shutdown(input)``)."""
