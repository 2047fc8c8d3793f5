"""`perception keys generate`: a CURVE key pair for tcp endpoints (`security:` in the config)."""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq.auth

from app.common import cache_dir_arg
from perception.errors import PerceptionError
from perception.io.curve import generate_key_pair

__all__ = ["DEFAULT_KEYS_DIR", "cmd_keys_generate"]

DEFAULT_KEYS_DIR = "~/.config/perception-node/keys"


def cmd_keys_generate(args: argparse.Namespace) -> int:
    folder = cache_dir_arg(args.out, "--out") or Path(DEFAULT_KEYS_DIR).expanduser()
    try:
        public, secret = generate_key_pair(folder, args.name, overwrite=args.overwrite)
    except ValueError as e:
        raise PerceptionError(f"--name {e}") from None
    except FileExistsError as e:
        raise PerceptionError(str(e)) from None
    key, _ = zmq.auth.load_certificate(public)
    print(f"perception keys: public key {public} ({key.decode() if key else '?'})", flush=True)
    print(
        f"perception keys: secret key {secret} (mode 0600: security.secret_key of the "
        "processes using this key pair; never copy it elsewhere)",
        flush=True,
    )
    print(
        f"perception keys: admit this key pair's holders to an endpoint by copying {public.name} "
        "into that process's security.allowed_clients folder; clients connecting to a process "
        "using this key pair name it as security.server_key",
        flush=True,
    )
    return 0
