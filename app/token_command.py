"""`jupyterhub-canary token [mint|rotate]`: the service account's API token, minted with an admin token.

mint:   (create the user,) mint a token with the least scopes the canary needs on this hub's version,
        and store it in a Kubernetes Secret (or print it, when asked).
rotate: mint a new token, update the Secret (only if nobody wrote it since this run read the old
        token: else 18, and the new token is revoked), then revoke the previous one — in that order,
        so the canary is never left without a valid token, and signals wait until all three are done.

A JupyterHub *service* (a fresh-user probe's token owner) cannot get a token this way: the hub mints
through its API for users only, and a service's token is the one the hub's configuration gives it.
When --user names a service (GET /hub/api/services lists it to the admin token), the
command ends with 78 before it creates or mints anything, and says where the token comes from.

Neither the admin token nor the minted one is ever logged; logs go to stderr, stdout carries only
what was asked for (the token with --print, the manifest with --dry-run).
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any, TextIO
from urllib.parse import quote

from app import __version__, logs
from app.config import TokenCommandConfig
from app.deadline import Clock, Deadline
from app.errors import CanaryError, ConcurrentRun, ConfigError, HubUnavailable
from app.hub import HubClient, hub_message
from app.kube import WriteOutcomeUnknown
from app.models import TokenOwner
from app.scopes import least
from app.signals import Shield, no_shield
from app.token_source import read_token

log = logs.get_logger()

LABELS = {"app.kubernetes.io/managed-by": "jupyterhub-canary", "app.kubernetes.io/component": "api-token"}
ANNOTATION = "jupyterhub-canary.jupyter.org/"  # prefix of what the Secret records about its token


class ServiceTokenNotMintable(ConfigError):
    """--user names a JupyterHub service: its token is set by the hub's configuration, not minted."""

    reason = "service_token_not_mintable"


SERVICE_TOKEN_WAY = (
    "JupyterHub mints tokens through its API for users only; a service's token is the one the hub's "
    "configuration gives it. Make a random token into a Secret of your own (kubectl create secret generic "
    "jupyterhub-canary-service-token --from-literal=token=\"$(openssl rand -hex 32)\"), let the hub read it "
    "(hub-config/jupyterhub_canary_config.py reads JUPYTERHUB_CANARY_SERVICE_TOKEN; zero-to-jupyterhub: "
    "hub.extraEnv in hub-config/z2jh-values.yaml) and give the canary's probe the same Secret: "
    "chart/README.md, \"Fresh-user probes\""
)


def least_scopes(hub_version: str, user: str) -> list[str]:
    """The fewest scopes with which the canary's cycle works for `user` on a hub of this version
    (app/scopes.py `least`: what the cycle needs, stated there once), each for `user` only."""
    return [f"{scope}!user={user}" for scope in least(hub_version)]


class TokenCommand:
    def __init__(
        self,
        config: TokenCommandConfig,
        out: TextIO | None = None,
        *,
        shield: Shield = no_shield,
        clock: Clock = time.monotonic,
    ):
        self.config = config
        self.user = config.user
        self.out = out or sys.stdout
        self.deadline = Deadline(config.deadline, clock)  # the whole command's, Kubernetes API included
        # Signals wait while a minted token is on its way to where it belongs (app/signals.py):
        # interrupted there, it would be a live token that nobody holds.
        self._shield = shield
        self.client: HubClient | None = None
        # The minted token's note: --note and an id unique to this run. It is what proves a token to
        # be this run's when a mint's answer is lost (a concurrent mint or rotate has another one).
        self.run_id = uuid.uuid4().hex[:12]
        self.note = f"{config.note} {self.run_id}"

    # --- the two actions ---

    def run(self) -> None:
        admin_token = read_token(
            self.config.admin_token_source, self.deadline,
            request_timeout=self.config.request_timeout, kube_relaxed_x509=self.config.kube_relaxed_x509,
        )
        logs.add_secret(admin_token)
        self.client = HubClient(
            self.config.hub_url, admin_token, request_timeout=self.config.request_timeout, verify=self.config.tls_verify
        )
        try:
            version = self.client.version(self.deadline)
            admin = self.client.whoami(self.deadline)
            log.info("admin_token_valid", hub_version=version, owner=admin.name, owner_kind=admin.kind)
            self.refuse_service()  # before anything is created, minted or read from Kubernetes
            self.ensure_user()
            scopes = self.scopes(version)
            if self.config.action == "rotate":
                self.rotate(scopes)
            else:
                with self._shield():
                    self.mint_and_store(scopes)
        finally:
            self.client.close()

    def mint_and_store(self, scopes: list[str] | None, *, read: Any = None) -> dict[str, Any] | None:
        """Mint a token and put it where it belongs (the Secret, stdout); take it back if it cannot be.

        `read`: the Secret as this run read it (a rotation): stored only if nobody wrote it since.
        """
        if self.config.dry_run:
            self.print_manifest(scopes)
            return None
        minted = self.mint(scopes)
        if self.config.secret:
            try:
                self.store(minted, read=read)
            except WriteOutcomeUnknown:
                # The Secret may hold it, and the canary may be using it: it is not revoked, it is named.
                log.warning("new_token_not_revoked", token_id=str(minted["id"]),
                            reason="whether the Secret holds it is unknown: check its token-id annotation")
                raise
            except ConcurrentRun:
                self.revoke(minted["id"], why="another writer stored its token in the Secret first")
                raise
            except BaseException:
                # A token nobody holds is a credential lying around: take it back.
                self.revoke(minted["id"], why="the Secret could not be written")
                raise
        if self.config.print_token:
            print(minted["token"], file=self.out, flush=True)
        return minted

    def rotate(self, scopes: list[str] | None) -> None:
        ref = self.config.secret
        assert ref is not None  # config guarantees it
        # The Secret as read here guards the write: a rotation that wrote it since makes this one
        # fail (18) and take its own new token back, instead of leaving that other token unheld.
        with self._secret_store() as store:
            current = store.read()
            old_token = store.key_value(current, ref.key)
        logs.add_secret(old_token)
        old_id, unknown_why = self.old_token_id(old_token, current.metadata.annotations or {})
        if self.config.dry_run:
            log.info("rotation_planned", old_token_id=old_id)
            self.print_manifest(scopes)
            return
        # Signals wait until the old token is revoked too: else the run ends with two valid tokens.
        with self._shield():
            try:
                minted = self.mint_and_store(scopes, read=current)
            except WriteOutcomeUnknown:
                if old_id is not None:
                    log.warning("old_token_not_revoked", token_id=old_id,
                                reason="whether the Secret holds the new token is unknown")
                raise
            assert minted is not None
            self.revoke_old(old_id, str(minted["id"]), unknown_why)
            log.info("token_rotated", old_token_id=old_id, new_token_id=minted["id"])

    def revoke_old(self, old_id: str | None, new_id: str, unknown_why: str = "") -> None:
        """Revoke the rotated-out token; `old_token_not_revoked`, naming it, when that cannot be done."""
        if old_id is None:
            log.warning("old_token_not_revoked", reason=unknown_why)
            return
        if old_id == new_id:  # pragma: no cover - the hub never reuses ids
            raise ConfigError("the new token has the id of the old one: refusing to revoke it")
        try:
            self.revoke(old_id, why="rotated")
        except CanaryError as failed:
            log.warning("old_token_not_revoked", token_id=old_id, reason=failed.message)
            raise

    # --- steps ---

    def refuse_service(self) -> None:
        """78 (ServiceTokenNotMintable) when --user names a JupyterHub service.

        The admin token needs `read:services` to tell (an admin has it); without it the hub answers 403,
        and the command goes on as for a user, which it logs.
        """
        assert self.client is not None
        # The list, not GET services/<name>: JupyterHub 4.1 answers that 500 for a name that is no service.
        response = self.client.api("GET", "services", self.deadline)
        if response.status_code == 200:
            services = self.client.json_object(response, "GET /hub/api/services")
            if self.user in services:
                raise ServiceTokenNotMintable(f"--user {self.user!r} is a JupyterHub service, not a user: {SERVICE_TOKEN_WAY}")
        elif response.status_code in (401, 403):
            log.info("service_lookup_forbidden",
                     hint="the admin token lacks read:services: whether --user names a JupyterHub service is unknown")
        else:
            raise HubUnavailable(f"GET /hub/api/services answered {response.status_code} {hub_message(response)}")

    def ensure_user(self) -> None:
        assert self.client is not None
        path = self.client.user_path(self.user)
        if self.config.create_user and not self.config.dry_run:
            log.info("user_created" if self.client.create_user(self.user, self.deadline) else "user_exists")
            return
        response = self.client.api("GET", path, self.deadline)
        self.client.raise_for_auth(response, f"reading user {self.user!r}")
        if response.status_code == 404:
            if self.config.create_user:  # dry run
                log.info("user_would_be_created")
                return
            raise ConfigError(f"--user {self.user!r} does not exist on the hub: create it with --create-user")
        if response.status_code != 200:
            raise HubUnavailable(f"reading user {self.user!r}: {response.status_code} {hub_message(response)}")

    def scopes(self, hub_version: str) -> list[str] | None:
        """The scopes to ask for; None asks the hub for the user's own permissions (inherit)."""
        if self.config.inherit_scopes:
            return None
        return list(self.config.scopes) if self.config.scopes else least_scopes(hub_version, self.user)

    def mint(self, scopes: list[str] | None) -> dict[str, Any]:
        assert self.client is not None
        body: dict[str, Any] = {"note": self.note}
        if scopes is not None:
            body["scopes"] = scopes
        if self.config.expires_in:
            body["expires_in"] = self.config.expires_in
        minted = self.client.mint_token(self.user, body, self.deadline)
        logs.add_secret(minted["token"])
        log.info(
            "token_minted",
            token_id=minted.get("id"),
            scopes=minted.get("scopes"),
            expires_at=minted.get("expires_at"),
            note=minted.get("note"),
        )
        return minted

    def store(self, minted: dict[str, Any], *, read: Any = None) -> None:
        ref = self.config.secret
        assert ref is not None
        with self._secret_store() as store:
            action = store.write_key(ref.key, minted["token"], LABELS, self.annotations(minted), read=read)
        log.info(f"secret_{action}", secret=ref.name, namespace=ref.namespace, key=ref.key)

    def _secret_store(self) -> Any:  # -> app.secret.SecretStore (imported when used: start-up time)
        from app.secret import SecretStore

        ref = self.config.secret
        assert ref is not None  # config guarantees it
        return SecretStore(
            ref.name, ref.namespace, self.deadline,
            request_timeout=self.config.request_timeout, relaxed_x509=self.config.kube_relaxed_x509,
        )

    def annotations(self, minted: dict[str, Any]) -> dict[str, str]:
        return {
            ANNOTATION + "user": self.user,
            ANNOTATION + "hub-url": self.config.hub_url,
            ANNOTATION + "token-id": str(minted.get("id") or ""),
            ANNOTATION + "token-note": self.note,
            ANNOTATION + "expires-at": str(minted.get("expires_at") or "never"),
            ANNOTATION + "written-by": f"jupyterhub-canary {__version__}",
        }

    def old_token_id(self, token: str, annotations: dict[str, str]) -> tuple[str | None, str]:
        """The id of the token the Secret holds (`token`), to revoke once the new one is stored; else
        None and why. Never the id of another token: revoking one the Secret does not hold could take
        a credential from whoever uses it, and leave the Secret's own token live.

        The hub names a token to the token itself (JupyterHub 5+): that is the proof, and a token it
        rejects is invalid already, with nothing to revoke. The Secret's annotations are this
        command's note of what it stored, and go stale when the token is put in by hand (`kubectl
        apply` keeps them): they count only on a hub that cannot name a token (before 5), and there
        only if the hub has a token of the annotated id with the annotated note.
        """
        assert self.client is not None
        probe = HubClient(
            self.config.hub_url, token, request_timeout=self.config.request_timeout, verify=self.config.tls_verify
        )
        try:
            response = probe.api("GET", "user", self.deadline)
        finally:
            probe.close()
        if response.status_code in (401, 403):
            return None, "the token the Secret holds is invalid already: nothing to revoke"
        if response.status_code != 200:
            raise HubUnavailable(
                f"GET /hub/api/user with the Secret's token answered {response.status_code} {hub_message(response)}"
            )
        token_id = probe.parsed(response, "GET /hub/api/user", TokenOwner.parse).token_id
        if token_id is not None:  # JupyterHub 5+
            return token_id, ""
        recorded_id, note = annotations.get(ANNOTATION + "token-id"), annotations.get(ANNOTATION + "token-note")
        if not recorded_id or not note:
            return None, "the hub cannot name tokens (before JupyterHub 5) and the Secret does not record its token's id"
        recorded = self.client.api("GET", f"{self.client.user_path(self.user)}/tokens/{quote(recorded_id, safe='')}",
                                   self.deadline)
        if recorded.status_code != 200 or self.client.json_object(recorded, "GET a token").get("note") != note:
            return None, f"the token {recorded_id} the Secret's annotations name is not the one this command minted for it"
        return recorded_id, ""

    def revoke(self, token_id: str, *, why: str) -> None:
        assert self.client is not None
        self.client.revoke_token(self.user, token_id, self.deadline)
        log.info("token_revoked", token_id=token_id, why=why)

    def print_manifest(self, scopes: list[str] | None) -> None:
        import yaml

        ref = self.config.secret
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": ref.name if ref else "<no --secret given>",
                "namespace": ref.namespace if ref else "default",
                "labels": LABELS,
                "annotations": self.annotations({"id": "<minted>", "expires_at": None}),
            },
            "type": "Opaque",
            "stringData": {(ref.key if ref else "token"): logs.REDACTED},
        }
        log.info("dry_run", scopes=scopes or ["inherit"], action=self.config.action)
        self.out.write(yaml.safe_dump(manifest, sort_keys=False))
        self.out.flush()
