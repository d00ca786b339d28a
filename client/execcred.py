"""Exec credential plugins (kubeconfig `users[].user.exec`), as client-go runs them.

Guarantees
- `ExecPlugin(config)` validates the `exec` stanza when made (ValueError with a clear
  message): apiVersion client.authentication.k8s.io/v1 or v1beta1, a command, env as
  a list of {name, value}, interactiveMode Never / IfAvailable / Always (required in
  v1; v1beta1 defaults to IfAvailable).
- `credential()` runs `command args...` with this process's environment plus the
  stanza's `env` (which wins) and KUBERNETES_EXEC_INFO, a JSON ExecCredential whose
  `spec.interactive` says whether the plugin may prompt and, with
  `provideClusterInfo: true`, whose `spec.cluster` describes the cluster (server,
  tls-server-name, insecure-skip-tls-verify, certificate-authority-data, proxy-url,
  and the cluster's `extensions` entry named "client.authentication.k8s.io/exec" as
  `config`). The plugin's stderr is ours; its stdin is ours only when interactive
  (stdin is a terminal and the mode is not Never); `Always` without a terminal is an
  error, not a hang.
- The plugin's stdout must be an ExecCredential of the same apiVersion whose status
  has a `token`, or both `clientCertificateData` and `clientKeyData` (PEM). Anything
  else - a missing command (with the stanza's installHint), a non-zero exit, bad
  JSON, a wrong kind - raises `ExecPluginError` naming the command.
- The result is cached until its `expirationTimestamp` (RFC 3339) passes on the wall
  clock (`client.clock`), then the plugin runs again; no expiry means "valid until
  `invalidate()`" (client-go re-runs it after a 401). Concurrent callers share one run.

Concurrency: one asyncio loop; a lock serializes runs.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from client.clock import Clock, RealClock

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_MODES = ("Never", "IfAvailable", "Always")


class ExecPluginError(Exception):
    """The exec plugin could not give a credential."""


@dataclass(frozen=True)
class ExecCredential:
    token: str | None = None
    client_certificate_data: bytes | None = None  # PEM
    client_key_data: bytes | None = None          # PEM
    expires_at: float | None = None                # wall-clock seconds since the epoch


class ExecPlugin:
    def __init__(self, config: Mapping[str, Any], *, cluster: Mapping[str, Any] | None = None,
                 clock: Clock | None = None, env: Mapping[str, str] | None = None):
        """`config` is the kubeconfig's `exec` stanza; `cluster` the context's cluster
        entry (for provideClusterInfo); `env` replaces os.environ as the base (tests)."""
        self.api_version = str(config.get("apiVersion") or "")
        if self.api_version not in API_VERSIONS:
            raise ValueError(f"exec plugin: apiVersion {self.api_version!r} is not supported "
                             f"(one of {', '.join(API_VERSIONS)})")
        self.command = str(config.get("command") or "")
        if not self.command:
            raise ValueError("exec plugin: command is required")
        args = config.get("args") or []
        if not isinstance(args, list):
            raise ValueError("exec plugin: args must be a list of strings")
        self.args = [str(a) for a in args]
        self.env: dict[str, str] = {}
        for item in config.get("env") or []:
            if not isinstance(item, Mapping) or not item.get("name"):
                raise ValueError(f"exec plugin: env entries need a name and a value, got {item!r}")
            self.env[str(item["name"])] = str(item.get("value", ""))
        mode = config.get("interactiveMode")
        if mode is None:
            if self.api_version.endswith("/v1"):
                raise ValueError("exec plugin: interactiveMode must be specified for "
                                 f"{self.api_version} (Never, IfAvailable or Always)")
            mode = "IfAvailable"
        if mode not in _MODES:
            raise ValueError(f"exec plugin: invalid interactiveMode {mode!r} (Never, IfAvailable, Always)")
        self.interactive_mode = str(mode)
        self.install_hint = str(config.get("installHint") or "")
        self.cluster = dict(cluster) if config.get("provideClusterInfo") and cluster else None
        self.clock = clock or RealClock()
        self._base_env = env
        self._cached: ExecCredential | None = None
        self._lock = asyncio.Lock()
        self.runs = 0  # how many times the plugin has been run

    def cached(self) -> ExecCredential | None:
        """The current credential if it has not expired."""
        c = self._cached
        if c is None or (c.expires_at is not None and self.clock.now() >= c.expires_at):
            return None
        return c

    def invalidate(self, used: ExecCredential | None = None) -> None:
        """Forget the credential (the server refused it), unless a newer one has
        already replaced `used`."""
        if used is None or used is self._cached:
            self._cached = None

    async def credential(self) -> ExecCredential:
        c = self.cached()
        if c is not None:
            return c
        async with self._lock:
            c = self.cached()  # another task may have run the plugin meanwhile
            if c is None:
                c = self._cached = await self._run()
            return c

    def _exec_info(self, interactive: bool) -> str:
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            c = self.cluster
            info: dict[str, Any] = {"server": c.get("server", "")}
            for key, name in (("tls-server-name", "tls-server-name"),
                              ("insecure-skip-tls-verify", "insecure-skip-tls-verify"),
                              ("proxy-url", "proxy-url")):
                if c.get(key):
                    info[name] = c[key]
            ca = c.get("certificate-authority-data")
            if not ca and c.get("certificate-authority"):
                try:
                    with open(c["certificate-authority"], "rb") as f:
                        ca = base64.b64encode(f.read()).decode()
                except OSError:
                    ca = None
            if ca:
                info["certificate-authority-data"] = ca
            for ext in c.get("extensions") or []:
                if isinstance(ext, Mapping) and ext.get("name") == "client.authentication.k8s.io/exec":
                    info["config"] = ext.get("extension")
            spec["cluster"] = info
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    async def _run(self) -> ExecCredential:
        stdin_tty = sys.stdin is not None and sys.stdin.isatty()
        interactive = self.interactive_mode != "Never" and stdin_tty
        if self.interactive_mode == "Always" and not interactive:
            raise ExecPluginError(f"exec plugin {self.command!r} cannot support interactive mode: "
                                  "standard input is not a terminal (its interactiveMode is Always)")
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update(self.env)
        env["KUBERNETES_EXEC_INFO"] = self._exec_info(interactive)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdout=asyncio.subprocess.PIPE,
                stdin=None if interactive else asyncio.subprocess.DEVNULL)
        except OSError as e:
            hint = f"\n\n{self.install_hint}" if self.install_hint else ""
            raise ExecPluginError(f"exec plugin: cannot run {self.command!r}: "
                                  f"{e.strerror or e}{hint}") from None
        out, _ = await proc.communicate()
        self.runs += 1
        if proc.returncode != 0:
            raise ExecPluginError(f"exec plugin {self.command!r} failed with exit code {proc.returncode}")
        return self._parse(out)

    def _parse(self, out: bytes) -> ExecCredential:
        where = f"exec plugin {self.command!r}"
        try:
            doc = json.loads(out)
        except ValueError as e:
            raise ExecPluginError(f"{where}: output is not an ExecCredential (invalid JSON: {e})") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise ExecPluginError(f"{where}: output is not an ExecCredential")
        if doc.get("apiVersion") != self.api_version:
            raise ExecPluginError(f"{where}: output apiVersion {doc.get('apiVersion')!r} does not "
                                  f"match the configured {self.api_version!r}")
        status = doc.get("status")
        if not isinstance(status, dict):
            raise ExecPluginError(f"{where}: the ExecCredential has no status")
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise ExecPluginError(f"{where}: clientCertificateData and clientKeyData must be given together")
        if not token and not cert:
            raise ExecPluginError(f"{where}: the ExecCredential has neither a token nor a "
                                  "client certificate and key")
        expires_at = None
        if status.get("expirationTimestamp"):
            try:
                expires_at = datetime.fromisoformat(str(status["expirationTimestamp"])).timestamp()
            except ValueError:
                raise ExecPluginError(f"{where}: invalid expirationTimestamp "
                                      f"{status['expirationTimestamp']!r}") from None
        return ExecCredential(token=str(token) if token else None,
                              client_certificate_data=str(cert).encode() if cert else None,
                              client_key_data=str(key).encode() if key else None,
                              expires_at=expires_at)
