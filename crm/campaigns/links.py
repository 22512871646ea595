"""Unsubscribe links for a whole campaign, built at a fraction of the per-link cost.

`crm.mailing.services.unsubscribe_url` builds one link the general way: a serializer
object, its key derived again, the payload through JSON and the zlib size test, the
route through Werkzeug's URL builder. Sending does that for every recipient, so here
the route prefix and the signing key are worked out once per campaign, and a link is
an f-string, one base64 and one C-level HMAC. The tokens are the very same strings
(same payload, salt, key derivation and signature: `unsubscribe_subscription` reads
them); the constructor checks that on a few samples against the general path and uses
the general path whenever they differ (a changed serializer setting, say).
"""

from __future__ import annotations

import hmac
from base64 import urlsafe_b64encode
from collections.abc import Callable

from flask import current_app
from itsdangerous import URLSafeSerializer
from itsdangerous.signer import HMACAlgorithm

from crm.mailing.services import UNSUBSCRIBE_SALT, unsubscribe_token, unsubscribe_url


def _b64(data: bytes) -> str:
    # itsdangerous' base64: URL-safe alphabet, no padding.
    return urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class UnsubscribeLinks:
    """`links(client_id, list_id)`: the absolute unsubscribe URL naming that
    subscription and this campaign, exactly as `unsubscribe_url` would build it."""

    # Samples the fast path must reproduce exactly before it is used.
    _SAMPLES = ((1, 1), (987_654_321, 42), (7, 123_456))

    def __init__(self, campaign_id: int | None) -> None:
        self.campaign_id = campaign_id
        self._tail = "null" if campaign_id is None else str(int(campaign_id))
        self.fast = False
        self._prefix = ""
        self._key = b""
        self._digest: Callable[..., object] | str = "sha1"
        self._sep = "."
        try:
            self._set_up()
            self.fast = all(
                self(client_id, list_id) == unsubscribe_url(client_id, list_id, campaign_id)
                for client_id, list_id in self._SAMPLES
            )
        except (AttributeError, TypeError, ValueError):
            self.fast = False

    def _set_up(self) -> None:
        serializer = URLSafeSerializer(current_app.secret_key or "", salt=UNSUBSCRIBE_SALT)
        signer = serializer.make_signer()
        if not isinstance(signer.algorithm, HMACAlgorithm):
            raise TypeError("not an HMAC signer")
        self._key = signer.derive_key()
        self._digest = signer.algorithm.digest_method
        self._sep = signer.sep.decode("ascii") if isinstance(signer.sep, bytes) else signer.sep
        # The route's prefix: a sample URL without its token (tokens hold only URL-safe
        # characters, so the URL builder never quotes them).
        token = unsubscribe_token(1, 1, self.campaign_id)
        url = unsubscribe_url(1, 1, self.campaign_id)
        if not url.endswith(token):
            raise ValueError("the route changes the token")
        self._prefix = url[: -len(token)]
        self.fast = True

    def __call__(self, client_id: int, list_id: int) -> str:
        if not self.fast:
            return unsubscribe_url(client_id, list_id, self.campaign_id)
        # The compact JSON itsdangerous writes for [client, list, campaign]; payloads this
        # short are never zlib-compressed (compression would make them longer).
        payload = _b64(f"[{int(client_id)},{int(list_id)},{self._tail}]".encode("ascii"))
        signature = hmac.digest(self._key, payload.encode("ascii"), self._digest)  # type: ignore[arg-type]
        return f"{self._prefix}{payload}{self._sep}{_b64(signature)}"
