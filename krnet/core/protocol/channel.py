"""The authenticated channel: the HMAC that binds the token, both nonces and the direction.

docs/protocol.md "Authentication" is the specification. Every message after `hello` carries a
`mac`; every message after the first (`join` or `status_request`) carries a `seq` above the
last one, so a message cannot be replayed, reflected, or moved into another connection.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from pydantic import JsonValue

from krnet.core.protocol.framing import JsonObject, canonical_json, decode_frame, encode_frame
from krnet.core.protocol.messages import Message
from krnet.core.protocol.parse import KIND_OF, parse_message
from krnet.errors import ProtocolError

Direction: TypeAlias = Literal["krnet runner->host", "krnet host->runner"]
RUNNER_TO_HOST: Final = "krnet runner->host"
HOST_TO_RUNNER: Final = "krnet host->runner"


def new_nonce() -> str:
    """A fresh 128-bit nonce, 32 lowercase hex digits."""
    return secrets.token_hex(16)


def new_runner_key() -> str:
    """A fresh per-runner key the host issues at enrolment: 256 bits, 64 lowercase hex digits."""
    return secrets.token_hex(32)


def mac_key(token: str, runner_key: str | None) -> str:
    """The HMAC key of a session: the token, and once a runner is enrolled `token:runner_key`.

    Keyed by both, a message proves the cluster token and that runner's key at once.
    """
    return token if runner_key is None else f"{token}:{runner_key}"


def compute_mac(
    token: str,
    fields: Mapping[str, JsonValue],
    host_nonce: str,
    runner_nonce: str,
    direction: Direction,
) -> str:
    """HMAC-SHA256 keyed by the join token over the message (without `mac`) and both nonces."""
    body = {key: value for key, value in fields.items() if key != "mac"}
    text = b"\n".join(
        [canonical_json(body), host_nonce.encode(), runner_nonce.encode(), direction.encode()]
    )
    return hmac.new(token.encode(), text, hashlib.sha256).hexdigest()


@dataclass
class Channel:
    """One authenticated session: signs what we send, checks MAC and seq of what we receive.

    `token` is the HMAC key (`mac_key`): it changes to include the runner key right after an
    enrolment's `welcome` (`enrol`).
    """

    token: str
    host_nonce: str
    runner_nonce: str
    sending: Direction
    sent_seq: int = 0
    received_seq: int = 0

    def enrol(self, token: str, runner_key: str) -> None:
        """Key every later message by the cluster token and this runner's new key."""
        self.token = mac_key(token, runner_key)

    @property
    def receiving(self) -> Direction:
        return HOST_TO_RUNNER if self.sending == RUNNER_TO_HOST else RUNNER_TO_HOST

    def sign(self, kind: type[Message], /, **fields: JsonValue) -> bytes:
        """A `kind` message of `fields`, sealed, once the model its reader parses accepts it.

        How krnet sends: `type` first, `fields` in their order, then `seq` (every message but
        the first of a connection) and `mac`.
        """
        line = self.seal({"type": KIND_OF[kind], **fields}, sequenced="seq" in kind.model_fields)
        try:
            parse_message(decode_frame(line[:-1]), (kind,))
        except ProtocolError as exc:
            raise ProtocolError(
                "internal", f"krnet built a message its peer refuses: {exc}"
            ) from None
        return line

    def seal(self, fields: Mapping[str, JsonValue], *, sequenced: bool = True) -> bytes:
        """One signed line of `fields` as given; sequenced messages get the next `seq`."""
        body: JsonObject = dict(fields)
        if sequenced:
            self.sent_seq += 1
            body["seq"] = self.sent_seq
        body["mac"] = compute_mac(
            self.token, body, self.host_nonce, self.runner_nonce, self.sending
        )
        return encode_frame(body)

    def check(self, obj: Mapping[str, JsonValue], *, sequenced: bool = True) -> None:
        """Refuse (auth_failed) a message with a wrong MAC or a seq not above the last one."""
        expected = compute_mac(self.token, obj, self.host_nonce, self.runner_nonce, self.receiving)
        if not hmac.compare_digest(expected, str(obj.get("mac", ""))):
            raise ProtocolError(
                "auth_failed",
                "message authentication failed: the peer does not hold this cluster's join "
                "token (compare join_token / join_token_file / KRNET_JOIN_TOKEN with "
                "`krnet token` on the host)",
            )
        if sequenced:
            seq = obj["seq"]
            if not isinstance(seq, int) or seq <= self.received_seq:
                raise ProtocolError(
                    "auth_failed", f"replayed message: seq {seq} after {self.received_seq}"
                )
            self.received_seq = seq
