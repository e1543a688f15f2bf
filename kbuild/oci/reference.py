"""Image references as registries read them: REGISTRY/REPOSITORY[:TAG][@DIGEST]."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as in the Docker config's auths
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        last = path.rsplit("/", 1)[-1]
        tag = None
        if ":" in last:
            path, tag = path.rsplit(":", 1)
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not path or (not tag and not digest):
            tag = tag or "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def api_host(self) -> str:
        return _HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def scheme(self) -> str:
        """https, except for registries on this machine (plain HTTP there only)."""
        return "http" if is_loopback(self.registry) else "https"

    @property
    def ref(self) -> str:
        """What the manifest endpoint takes: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_loopback(registry: str) -> bool:
    if registry.startswith("[") and "]" in registry:  # [IPv6]:PORT
        host = registry[1 : registry.index("]")]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
