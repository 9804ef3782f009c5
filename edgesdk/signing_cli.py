"""`edgesdk sign BUNDLE --key KEY` and `edgesdk keygen --out DIR`: the CLI over edgesdk.runtime.signing."""

from __future__ import annotations


def add_parsers(sub) -> None:
    p = sub.add_parser("sign", help="sign a bundle's manifest with an Ed25519 private key",
                       description="Check the bundle's hashes, then sign its manifest (which lists the sha256 of "
                                   "every file) with KEY; the signature goes to signature.json in the bundle. "
                                   "Devices check it with `edgesdk verify --key PUB` or load(..., trusted_keys=).")
    p.add_argument("bundle")
    p.add_argument("--key", required=True, help="private key PEM (from `edgesdk keygen`)")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles",
                       description="Write edgesdk-signing.key (private, mode 0600: keep it off devices) and "
                                   "edgesdk-signing.pub (give it to the devices) into DIR. Never overwrites.")
    p.add_argument("--out", required=True, help="folder for the key pair")
    p.set_defaults(func=cmd_keygen)


def cmd_sign(args) -> int:
    from .runtime.signing import SIGNATURES, sign_bundle

    entry = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle} with key {entry['key_id']} ({SIGNATURES})")
    return 0


def cmd_keygen(args) -> int:
    from .runtime.signing import keygen, public_key_id

    private, public = keygen(args.out)
    print(f"private key {private} (keep secret)\npublic key  {public} (id {public_key_id(public)})")
    return 0
