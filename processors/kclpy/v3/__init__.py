"""The v3 processor API of amazon_kclpy: one method per daemon action."""
