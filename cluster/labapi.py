"""A small synchronous client of one API server, for the lab host commands (`init`,
`token`, `join`): short commands, for which client/rest.py's asyncio client would be all
overhead. Every failure is a `LabError` with one line (`<cause>; <fix>`); a refusal by the
server is an `ApiError` with its HTTP code and the Status message.
"""
from __future__ import annotations

import httpx


class LabError(Exception):
    """A one-line reason: `<cause>; <fix>`."""


class ApiError(LabError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# -- the API, synchronously ----------------------------------------------------------------------

class Api:
    """A small synchronous client of one API server as one kubeconfig's user (init, token
    and join are short commands; client/rest.py's asyncio client would be all overhead)."""

    def __init__(self, server: str, verify, *, ca_pem: bytes | None = None, timeout: float = 10.0):
        self.server = server.rstrip("/")
        self._ca = ca_pem
        self.http = httpx.Client(base_url=self.server, verify=verify, timeout=timeout)

    @classmethod
    def from_kubeconfig(cls, path: str, *, server: str | None = None) -> Api:
        """Api as the kubeconfig's current context; `server` overrides where it goes
        (init talks to its own API server before the control-plane endpoint may work)."""
        from client import kubeconfig
        try:
            conn = kubeconfig.load(path).connection()
            verify = conn.ssl_context()
        except FileNotFoundError:
            raise LabError(f"{path} does not exist; run this on a control-plane host after "
                           f"`minik8s init`, or give --kubeconfig") from None
        except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise LabError(f"cannot use kubeconfig {path}: {first}; check the file") from None
        ca = conn.ca_data
        if ca is None and conn.ca_file:
            with open(conn.ca_file, "rb") as f:
                ca = f.read()
        return cls(server or conn.server, verify, ca_pem=ca)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def ca_pem(self) -> bytes:
        if not self._ca:
            raise LabError("the kubeconfig names no CA; give one with certificate-authority-data")
        return self._ca

    def _do(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise LabError(f"cannot reach the API server at {self.server}: {e}; check that it runs "
                           f"(`minik8s init` on the first control-plane host)") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("message") or r.text
            except ValueError:
                msg = r.text
            raise ApiError(f"{method} {path}: {r.status_code} {msg.strip()}", r.status_code)
        return r

    def get(self, path: str) -> dict:
        return self._do("GET", path).json()

    def get_or_none(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def create(self, collection: str, obj: dict) -> dict:
        return self._do("POST", collection, json=obj).json()

    def delete(self, path: str) -> None:
        self._do("DELETE", path)

    def patch(self, path: str, body: dict, content_type: str = "application/merge-patch+json") -> dict:
        return self._do("PATCH", path, json=body, headers={"Content-Type": content_type}).json()

    def apply(self, obj: dict) -> str:
        """kubeadm's CreateOrUpdate: create, or replace what exists; "created"/"updated"."""
        collection = collection_path(obj)
        name = obj["metadata"]["name"]
        try:
            self.create(collection, obj)
            return "created"
        except ApiError as e:
            if e.code != 409:
                raise
        for _ in range(5):
            have = self.get(f"{collection}/{name}")
            want = {**obj, "metadata": {**obj["metadata"],
                                        "resourceVersion": have["metadata"]["resourceVersion"]}}
            try:
                self._do("PUT", f"{collection}/{name}", json=want)
                return "updated"
            except ApiError as e:
                if e.code != 409:
                    raise
        raise LabError(f"{obj['kind']} {name}: updates kept conflicting; run the command again")


_PLURALS = {"Secret": "secrets", "ConfigMap": "configmaps", "Role": "roles", "RoleBinding": "rolebindings",
            "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
            "Namespace": "namespaces"}


def collection_path(obj: dict) -> str:
    group_version = obj["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    ns = obj["metadata"].get("namespace")
    return base + (f"/namespaces/{ns}" if ns else "") + "/" + _PLURALS[obj["kind"]]


def endpoint_of(api: Api) -> str:
    """HOST:PORT of the API server `api` talks to."""
    return api.server.split("://", 1)[-1]
