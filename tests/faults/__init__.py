"""Fault injection for tests and the soak script.

``proxy``: a fault-injecting HTTP proxy on loopback between kcl-daemon and its local AWS
look-alikes (throttling, 5xx, slow answers, resets, lost responses, expired iterators, outages).
``monitor``: watches a lease table during a run and proves checkpoints never move backwards.
``children/``: child processors that misbehave on purpose (garbage on stdout, lifecycle evidence).
"""
