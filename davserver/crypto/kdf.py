"""Password-derived keys (Argon2id, argon2-cffi) with their parameters kept beside the blob.

Parameters travel with what they protect, so they can be raised later: a login that
unlocks a key made with weaker parameters re-wraps it with the current ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from argon2.low_level import Type, hash_secret_raw

from davserver.crypto import primitives

SALT_BYTES = 16


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost; the defaults are RFC 9106's second recommendation (64 MiB, t=3, p=4)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4
    alg: str = "argon2id"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KdfParams:
        return cls(int(d["time_cost"]), int(d["memory_kib"]), int(d["parallelism"]),
                   d.get("alg", "argon2id"))

    def weaker_than(self, other: KdfParams) -> bool:
        return (self.time_cost, self.memory_kib) < (other.time_cost, other.memory_kib) and (
            self.time_cost <= other.time_cost and self.memory_kib <= other.memory_kib)


def new_salt() -> bytes:
    return primitives.random_bytes(SALT_BYTES)


def derive(password: str, salt: bytes, params: KdfParams) -> bytes:
    if params.alg != "argon2id":
        raise ValueError(f"unsupported KDF {params.alg!r}")
    return hash_secret_raw(password.encode("utf-8"), salt, time_cost=params.time_cost,
                           memory_cost=params.memory_kib, parallelism=params.parallelism,
                           hash_len=32, type=Type.ID)
