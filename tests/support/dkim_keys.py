"""DKIM keys generated in the tests, their DNS records, and signing with dkimpy (DKIM and ARC)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from typing import Literal

import dkim
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class DkimKey:
    kind: Literal["rsa", "ed25519"]
    private: bytes  # what dkimpy's sign() takes
    public_b64: str

    @property
    def algorithm(self) -> bytes:
        return b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256"

    def txt(self) -> str:
        """The key record to publish at SELECTOR._domainkey.DOMAIN."""
        return f"v=DKIM1; k={self.kind}; p={self.public_b64}"


@cache
def rsa_key(bits: int = 1024, seed: int = 0) -> DkimKey:
    """An RSA key (cached per bits/seed: generation is the slow part of these tests)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey("rsa", private, base64.b64encode(public).decode())


@cache
def ed25519_key(seed: int = 0) -> DkimKey:
    signing = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(signing))
    public = base64.b64encode(bytes(signing.verify_key)).decode()
    return DkimKey("ed25519", private, public)


def dkim_sign(
    message: bytes,
    key: DkimKey,
    domain: str,
    selector: str = "sel",
    length: bool = False,
    headers: list[bytes] | None = None,
) -> bytes:
    """`message` with a DKIM-Signature header prepended."""
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private,
        signature_algorithm=key.algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers or [b"from", b"to", b"subject", b"date", b"message-id"],
        length=length,
    )
    return bytes(signature) + message


def arc_seal(
    message: bytes, key: DkimKey, domain: str, authserv_id: str, selector: str = "arc"
) -> bytes:
    """`message` with one more ARC set, sealed by `domain` (its A-R must name `authserv_id`)."""
    headers = dkim.arc_sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private,
        authserv_id.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return b"".join(headers) + message
