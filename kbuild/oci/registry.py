"""A client of the OCI distribution API: pull a base, push an image.

Token auth (the Bearer challenge registries answer with), credentials from the
Docker config and its helpers, plain HTTP only for loopback registries. A push
asks for each blob first and uploads only the ones the registry lacks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import docker.auth
import requests

from kbuild.oci.blobs import INDEXES, MANIFESTS, BlobStore, Descriptor, sha256_digest
from kbuild.oci.reference import Reference

_ACCEPT = ", ".join((*MANIFESTS, *INDEXES))
_TIMEOUT_S = 60
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """A registry refused or could not be reached; the message says which and why."""


@dataclass
class PushCount:
    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class Registry:
    """One repository on one registry, with its session and token."""

    def __init__(self, reference: Reference, *, push: bool = False) -> None:
        self.reference = reference
        self.base = f"{reference.scheme}://{reference.api_host}/v2/{reference.repository}"
        self.scope = f"repository:{reference.repository}:{'pull,push' if push else 'pull'}"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "kbuild"
        self._credentials = _credentials(reference.registry)
        self._authorized = False

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", _TIMEOUT_S)
        try:
            response = self.session.request(method, url, **kwargs)
            if response.status_code == 401 and not self._authorized:
                self._authorize(response)
                body = kwargs.get("data")
                seek = getattr(body, "seek", None)
                if seek is not None:
                    seek(0)
                response = self.session.request(method, url, **kwargs)
        except requests.RequestException as error:
            raise RegistryError(f"cannot reach {self.reference.registry}: {_one_line(error)}") from None
        return response

    def _authorize(self, response: requests.Response) -> None:
        self._authorized = True
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self._credentials:
                raise RegistryError(
                    f"{self.reference.registry} wants credentials: run `docker login {self.reference.registry}`"
                )
            self.session.auth = self._credentials
            return
        if scheme != "bearer":
            raise RegistryError(
                f"{self.reference.registry} asks for {scheme or 'no'} authentication, which kbuild does not speak"
            )
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", "")
        params.setdefault("scope", self.scope)
        try:
            answer = requests.get(realm, params=params, auth=self._credentials, timeout=_TIMEOUT_S)
        except requests.RequestException as error:
            raise RegistryError(f"cannot reach the token service {realm}: {_one_line(error)}") from None
        if answer.status_code != 200:
            raise RegistryError(
                f"the token service {realm} refused ({answer.status_code}); run `docker login {self.reference.registry}`"
            )
        data = answer.json()
        token = data.get("token") or data.get("access_token")
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _fail(self, what: str, response: requests.Response) -> RegistryError:
        detail = response.text.strip().replace("\n", " ")[:300]
        return RegistryError(f"{self.reference.registry} refused {what} ({response.status_code}): {detail}")

    # pulling

    def manifest(self, ref: str) -> tuple[Descriptor, bytes]:
        response = self._request("GET", f"{self.base}/manifests/{ref}", headers={"Accept": _ACCEPT})
        if response.status_code != 200:
            raise self._fail(f"the manifest {self.reference.repository}:{ref}", response)
        body = response.content
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{self.reference.registry} sent a manifest whose digest is {digest}, not {ref}")
        media_type = response.headers.get("Content-Type", "").split(";")[0] or json.loads(body).get("mediaType", "")
        return Descriptor(media_type, digest, len(body)), body

    def pull_blob(self, store: BlobStore, descriptor: Descriptor) -> None:
        if store.has(descriptor.digest):
            return
        response = self._request("GET", f"{self.base}/blobs/{descriptor.digest}", stream=True)
        if response.status_code != 200:
            raise self._fail(f"the blob {descriptor.digest}", response)
        response.raw.decode_content = False  # the digest is of the bytes as stored
        try:
            store.put_stream(response.raw, descriptor.media_type, expect=descriptor.digest)  # type: ignore[arg-type]
        except ValueError as error:
            raise RegistryError(str(error)) from None

    # pushing

    def has_blob(self, digest: str) -> bool:
        response = self._request("HEAD", f"{self.base}/blobs/{digest}")
        if response.status_code in (200, 404):
            return response.status_code == 200
        raise self._fail(f"a question about blob {digest}", response)

    def push_blob(self, store: BlobStore, descriptor: Descriptor) -> None:
        start = self._request("POST", f"{self.base}/blobs/uploads/")
        if start.status_code != 202 or "Location" not in start.headers:
            raise self._fail("the start of an upload", start)
        location = urljoin(self.base + "/", start.headers["Location"])
        with store.path(descriptor.digest).open("rb") as data:
            done = self._request(
                "PUT",
                location,
                params={"digest": descriptor.digest},
                data=data,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)},
            )
        if done.status_code != 201:
            raise self._fail(f"the blob {descriptor.digest}", done)

    def push_manifest(self, store: BlobStore, descriptor: Descriptor, ref: str) -> None:
        body = store.read(descriptor.digest)
        response = self._request(
            "PUT", f"{self.base}/manifests/{ref}", data=body, headers={"Content-Type": descriptor.media_type}
        )
        if response.status_code not in (200, 201):
            raise self._fail(f"the manifest {descriptor.digest}", response)


def push(
    store: BlobStore,
    reference: Reference,
    blobs: Iterable[Descriptor],
    manifests: list[Descriptor],
    top: Descriptor,
    progress: Callable[[str], None],
) -> PushCount:
    """Upload what the registry lacks of `blobs`, then the manifests (children
    first, by digest), then `top` under the reference's tag."""
    registry = Registry(reference, push=True)
    count = PushCount()
    seen: set[str] = set()
    for blob in blobs:
        if blob.digest in seen:
            continue
        seen.add(blob.digest)
        if registry.has_blob(blob.digest):
            count.present.append(blob.digest)
            continue
        registry.push_blob(store, blob)
        count.uploaded.append(blob.digest)
        progress(f"pushed blob {blob.digest[:19]} ({blob.size} bytes)")
    for manifest in manifests:
        registry.push_manifest(store, manifest, manifest.digest)
    registry.push_manifest(store, top, reference.tag or top.digest)
    return count


def _credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry` from the Docker config and its credential helpers."""
    try:
        config = docker.auth.load_config()
        found = config.resolve_authconfig(registry)
    except Exception:  # a broken config or helper: go on without credentials
        return None
    if not found:
        return None
    user = found.get("username") or found.get("Username")
    password = found.get("password") or found.get("Password") or found.get("IdentityToken")
    return (str(user), str(password)) if user and password else None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
