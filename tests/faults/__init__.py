"""Fault injection for QUIC paths: a seeded UDP impairment relay and network namespaces.

``impair`` changes delay, loss, order, duplication, rate and the client's
address in user space; ``netns`` gives kernel-level loss, link down/up and rate
limits between two namespaces; ``quic_peer`` is an echo pair for both.
"""
