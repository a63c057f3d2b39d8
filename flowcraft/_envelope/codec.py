"""The serialized context: a versioned msgspec envelope, codecs built once, optional signing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Protocol

import msgspec

from flowcraft._envelope.records import FORMAT, SIGNED_MAGIC, Envelope, TracedEnvelope
from flowcraft._errors import ContextDecodeError, ContextIntegrityError, SerializationError

__all__ = ["Codec", "Serializer"]


class Serializer(Protocol):
    """Turns envelopes into bytes and back (a custom codec for ``FlowRuntime(serializer=...)``)."""

    def encode(self, envelope: Envelope) -> bytes:
        """Encode an envelope."""
        ...

    def decode(self, data: bytes) -> Envelope:
        """Decode an envelope; raise ``msgspec.DecodeError`` (or a subclass) on bad input."""
        ...


class _Msgpack:
    def __init__(self) -> None:
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(Envelope)
        self.traced = msgspec.msgpack.Decoder(TracedEnvelope)

    def encode(self, envelope: Envelope) -> bytes:
        return self.encoder.encode(envelope)

    def decode(self, data: bytes) -> Envelope:
        # Up to 15 fields is a fixarray (0x90-0x9f): a plain envelope; more carry trace headers.
        return (self.decoder if data[:1] < b"\xdc" else self.traced).decode(data)


class _Json:
    def __init__(self) -> None:
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(Envelope)
        self.traced = msgspec.json.Decoder(TracedEnvelope)

    def encode(self, envelope: Envelope) -> bytes:
        return self.encoder.encode(envelope)

    def decode(self, data: bytes) -> Envelope:
        # A plain envelope ends with its shape (a string); an object last is the trace headers.
        return (self.traced if data.rstrip()[:-1].rstrip().endswith(b"}") else self.decoder).decode(
            data
        )


_MSGPACK = _Msgpack()
_JSON = _Json()
_MSGPACK_DECODE = _MSGPACK.decode
_PLAIN_DECODE = _MSGPACK.decoder.decode
_JSON_DECODE = _JSON.decode
_JSON_STARTS = frozenset(b"[{ \t\r\n")
_SIGNED_MAGIC = SIGNED_MAGIC


class Codec:
    """Encodes/decodes contexts for one runtime: serializer choice, signing, error mapping."""

    def __init__(
        self,
        serializer: str | Serializer | None = None,
        signing_keys: Mapping[str, bytes | str] | None = None,
        signing_key_id: str | None = None,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._encode: Callable[[Envelope], bytes]
        if serializer is None or serializer == "msgpack":
            self._writer: Serializer = _MSGPACK
            self._encode = _MSGPACK.encoder.encode
            self._auto = True
        elif serializer == "json":
            self._writer = _JSON
            self._encode = _JSON.encoder.encode
            self._auto = True
        elif isinstance(serializer, str):
            raise ValueError(
                f"serializer must be 'msgpack', 'json' or a Serializer, not {serializer!r}"
            )
        else:
            self._writer = serializer
            self._encode = serializer.encode
            self._auto = False
        self._keys = {
            k: v.encode() if isinstance(v, str) else bytes(v)
            for k, v in (signing_keys or {}).items()
        }
        if self._keys and signing_key_id is None:
            signing_key_id = next(reversed(self._keys))
        if signing_key_id is not None and signing_key_id not in self._keys:
            raise ValueError(f"signing_key_id {signing_key_id!r} is not in signing_keys")
        self._key_id = signing_key_id
        self.max_bytes = max_bytes
        self._plain = self._auto and not self._keys  # unsigned msgpack decodes without checks

    def encode(self, env: Envelope) -> bytes:
        try:
            data = self._encode(env)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError, OverflowError) as exc:
            raise _locate_unserializable(env, exc) from exc
        if self._key_id is None:
            return data
        key_id = self._key_id.encode()
        mac = hmac.new(self._keys[self._key_id], key_id + b"\0" + data, hashlib.sha256).digest()
        return _SIGNED_MAGIC + len(key_id).to_bytes(1, "big") + key_id + mac + data

    def decode(self, data: bytes) -> Envelope:
        if (
            self._plain
            and type(data) is bytes
            and 0x90 <= (data[0] if data else 0) <= 0x9F  # a msgpack array: a plain envelope
            and len(data) <= self.max_bytes
        ):
            return _decoded(_PLAIN_DECODE, data)
        if type(data) is not bytes:
            if not isinstance(data, bytearray | memoryview):
                raise ContextDecodeError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        if len(data) > self.max_bytes:
            raise ContextDecodeError(f"{len(data)} bytes is over the limit of {self.max_bytes}")
        if self._keys:
            data = self._verify(data)
        elif data[:4] == _SIGNED_MAGIC:
            raise ContextIntegrityError(
                "the context is signed but this runtime has no signing_keys"
            )
        decode: Callable[[bytes], Envelope]
        if not self._auto:
            decode = self._writer.decode
        elif data and data[0] in _JSON_STARTS:
            decode = _JSON_DECODE
        else:
            decode = _MSGPACK_DECODE
        return _decoded(decode, data)

    def _verify(self, data: bytes) -> bytes:
        if not data.startswith(_SIGNED_MAGIC) or len(data) < 6:
            raise ContextIntegrityError("the context is not signed")
        n = data[4]
        key_id = data[5 : 5 + n]
        mac = data[5 + n : 5 + n + 32]
        payload = data[5 + n + 32 :]
        key = self._keys.get(key_id.decode(errors="replace"))
        if key is None:
            raise ContextIntegrityError(f"it was signed with unknown key id {key_id!r}")
        expected = hmac.new(key, key_id + b"\0" + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise ContextIntegrityError("the signature does not match the content")
        return payload


def _decoded(decode: Callable[[bytes], Envelope], data: bytes) -> Envelope:
    """Decode with ``decode``, as a ``ContextDecodeError`` when the bytes are not an envelope."""
    try:
        env = decode(data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise ContextDecodeError(str(exc) or type(exc).__name__) from exc
    if env.format > FORMAT:
        raise ContextDecodeError(
            f"envelope format {env.format} is not supported (this version reads 1..{FORMAT}); "
            "upgrade flowcraft to read it"
        )
    return env


def _locate_unserializable(env: Envelope, exc: Exception) -> SerializationError:
    """Find which state key or node output could not be encoded (slow path, errors only)."""
    probe = msgspec.msgpack.Encoder()
    for where, values in (("state key", env.state), ("output of node", env.outputs)):
        for key, value in values.items():
            try:
                probe.encode(value)
            except (
                TypeError,
                ValueError,
                RecursionError,
                msgspec.EncodeError,
                OverflowError,
            ) as inner:
                return SerializationError(f"{where} {key!r} ({type(value).__name__})", str(inner))
    return SerializationError(f"run {env.run_id!r}", str(exc))
