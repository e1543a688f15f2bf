"""Servers, one module per transport: http (with http_api and wire), grpc
(with oip_proto), kafka.

Each module exposes

    async def start(service: Service, config: Mapping[str, Any]) -> Endpoint

where config is the pipeline's serve.<transport> object with command-line and
environment overrides applied, and Endpoint (kbuild.runtime.lifecycle) can shut
itself down gracefully. Modules are imported only for transports a pipeline
enables, so an artifact ships only those.
"""
