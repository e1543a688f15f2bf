"""Kafka streaming: the pieces behind kbuild.runtime.transports.kafka.

Shipped only in artifacts that enable serve.kafka. modelmsg is also imported by
the compiler's `kbuild publish-model`, so that publisher and replicas share one
definition of a model message; it therefore uses the standard library only.
"""
